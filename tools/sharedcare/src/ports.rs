//! The four services' ports: consecutive from a base port, in a fixed order.

/// identity's port when none is given; consent, records and audit follow.
pub const DEFAULT_BASE_PORT: u16 = 50051;

/// The loopback ports of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub identity: u16,
    pub consent: u16,
    pub records: u16,
    pub audit: u16,
}

impl Ports {
    /// identity at `base`, consent `base + 1`, records `base + 2`, audit
    /// `base + 3`. The command line keeps `base` at most 65532.
    pub fn from_base(base: u16) -> Self {
        let base = base.min(u16::MAX - 3);
        Ports {
            identity: base,
            consent: base + 1,
            records: base + 2,
            audit: base + 3,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_base_in_service_order() {
        let ports = Ports::from_base(DEFAULT_BASE_PORT);
        assert_eq!(
            (ports.identity, ports.consent, ports.records, ports.audit),
            (50051, 50052, 50053, 50054)
        );
        assert_eq!(Ports::url(ports.records), "http://127.0.0.1:50053");
    }
}

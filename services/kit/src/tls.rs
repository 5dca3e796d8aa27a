//! TLS for every gRPC server and client, mutual between the services:
//! "the network is not a credential". rustls with ring (the one crypto
//! provider linked), certificates and keys from PEM files (a mounted
//! Kubernetes Secret, e.g. issued by cert-manager), reloaded when they
//! change.
//!
//! One [`Tls`] per service holds its certificate and key (presented as the
//! server certificate and, on outgoing calls, as the client certificate, so
//! it needs both the `serverAuth` and `clientAuth` extended key usages) and
//! the CA that signs its peers' certificates (used to verify clients and
//! servers alike). The files are checked at most every
//! `tls.reload_interval_ms`, when a connection is accepted or made: if one
//! has changed, the rustls configurations are rebuilt from the new files and
//! used for new connections; connections already open keep theirs. A
//! half-written or broken set is logged and the last good one kept until
//! the files are whole again.
//!
//! Servers refuse plaintext (the handshake fails) and any client certificate
//! not signed by the CA. With `tls.client_auth = "required"` (the default)
//! a client must present one; `"optional"` also lets a client without a
//! certificate connect (it still needs a token for every RPC but health,
//! reflection, IssueToken and GetJwks) — for a service that apps without a
//! client certificate reach directly.

use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor, TlsConnector,
    rustls::{
        ClientConfig, RootCertStore, ServerConfig,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};
use tonic::transport::{Channel, Endpoint};

use crate::{Error, config::ConfigError};

/// How long a peer may take over its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client presents a certificate signed by `tls.ca_file`.
    #[default]
    Required,
    /// A client may connect without one; one it presents must still verify.
    Optional,
}

/// The `[tls]` section every service shares. Off unless `enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Serve TLS only, and call other services over TLS (https:// URLs).
    pub enabled: bool,
    /// This service's certificate chain, PEM (e.g. cert-manager's `tls.crt`).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key_file: Option<PathBuf>,
    /// The CA certificates that sign peers' certificates, PEM (`ca.crt`).
    pub ca_file: Option<PathBuf>,
    /// "required" (default) or "optional": see [`ClientAuth`].
    pub client_auth: ClientAuth,
    /// Least time between two checks of the files for a change.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            cert_file: None,
            key_file: None,
            ca_file: None,
            client_auth: ClientAuth::Required,
            reload_interval_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// Checks the keys and, when enabled, that the files hold a usable
    /// certificate, key and CA (errors name the key and the file, never
    /// the key material).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.reload_interval_ms < 100 {
            return Err(ConfigError::invalid(
                "tls.reload_interval_ms",
                "must be at least 100",
            ));
        }
        Material::load(&self.paths()?, self.client_auth).map(|_| ())
    }

    /// An outgoing URL must be https:// with TLS on and http:// with it off.
    pub fn check_url(&self, key: &str, url: &str) -> Result<(), ConfigError> {
        match (self.enabled, url.split_once("://").map(|(s, _)| s)) {
            (true, Some("https")) | (false, Some("http")) => Ok(()),
            (true, _) => Err(ConfigError::invalid(
                key,
                "tls.enabled is true: must be an https:// URL",
            )),
            (false, _) => Err(ConfigError::invalid(
                key,
                "must be an http:// URL (or turn on tls.enabled for https://)",
            )),
        }
    }

    fn paths(&self) -> Result<Paths, ConfigError> {
        let need = |key: &str, path: &Option<PathBuf>| {
            path.clone()
                .ok_or_else(|| ConfigError::invalid(key, "must be set when tls.enabled is true"))
        };
        Ok(Paths {
            cert: need("tls.cert_file", &self.cert_file)?,
            key: need("tls.key_file", &self.key_file)?,
            ca: need("tls.ca_file", &self.ca_file)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Paths {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Paths {
    /// What identifies a version of the files: modification time and length.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        [&self.cert, &self.key, &self.ca]
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// The rustls configurations built from one version of the files.
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn bad(key: &str, path: &Path, message: &str) -> ConfigError {
    ConfigError::invalid(key, format!("{}: {message}", path.display()))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(key, path, "not valid PEM"))?;
    if certs.is_empty() {
        return Err(bad(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl Material {
    fn load(paths: &Paths, client_auth: ClientAuth) -> Result<Material, ConfigError> {
        let chain = certificates("tls.cert_file", &paths.cert)?;
        // The key's own parse errors are not passed on: they may quote it.
        let key =
            PrivateKeyDer::from_pem_slice(&read("tls.key_file", &paths.key)?).map_err(|_| {
                bad(
                    "tls.key_file",
                    &paths.key,
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                )
            })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("tls.ca_file", &paths.ca)? {
            roots
                .add(ca)
                .map_err(|_| bad("tls.ca_file", &paths.ca, "holds an unusable CA certificate"))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let verifier = match client_auth {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(|e| bad("tls.ca_file", &paths.ca, &e.to_string()))?;
        let mismatch = |_| {
            bad(
                "tls.key_file",
                &paths.key,
                &format!(
                    "is not the key of the certificate in {} (or of a kind not supported)",
                    paths.cert.display()
                ),
            )
        };
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid("tls", e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(mismatch)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Material {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

struct State {
    checked: Instant,
    stamps: Vec<Option<(SystemTime, u64)>>,
    current: Arc<Material>,
}

struct Inner {
    paths: Paths,
    client_auth: ClientAuth,
    interval: Duration,
    state: Mutex<State>,
}

/// A service's TLS: its certificate and key and its peers' CA, reloaded when
/// the files change. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.inner.paths.cert)
            .field("ca_file", &self.inner.paths.ca)
            .field("client_auth", &self.inner.client_auth)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The configured TLS, or `None` when `tls.enabled` is false.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Tls>, Error> {
        let as_error = |e: ConfigError| Error::invalid("tls", e.to_string());
        if !cfg.enabled {
            return Ok(None);
        }
        cfg.validate().map_err(as_error)?;
        let paths = cfg.paths().map_err(as_error)?;
        let stamps = paths.stamps();
        let current = Arc::new(Material::load(&paths, cfg.client_auth).map_err(as_error)?);
        Ok(Some(Tls {
            inner: Arc::new(Inner {
                paths,
                client_auth: cfg.client_auth,
                interval: Duration::from_millis(cfg.reload_interval_ms),
                state: Mutex::new(State {
                    checked: Instant::now(),
                    stamps,
                    current,
                }),
            }),
        }))
    }

    /// The configurations for a new connection, reloading the files first
    /// if they are due a check and have changed.
    fn current(&self) -> Arc<Material> {
        let inner = &self.inner;
        let mut state = match inner.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= inner.interval {
            state.checked = Instant::now();
            let stamps = inner.paths.stamps();
            if stamps != state.stamps {
                match Material::load(&inner.paths, inner.client_auth) {
                    Ok(material) => {
                        state.current = Arc::new(material);
                        state.stamps = stamps;
                        tracing::info!(
                            cert_file = %inner.paths.cert.display(),
                            "reloaded the TLS certificate, key and CA"
                        );
                    }
                    // Not recorded as seen: tried again at the next check,
                    // by when a half-written set may be whole.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        }
        state.current.clone()
    }

    /// The server side, for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The client side (presenting this service's certificate), for the
    /// next outgoing connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// A lazy channel to an https:// URL over mutual TLS.
    pub fn channel(&self, url: &str) -> Result<Channel, Error> {
        if !url.starts_with("https://") {
            return Err(Error::invalid("url", "must be an https:// URL"));
        }
        Ok(Endpoint::from_shared(url.to_owned())
            .map_err(|_| Error::invalid("url", "not a valid URL"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(Connector { tls: self.clone() }))
    }

    /// TLS connections accepted on `listener`, handshakes done off the
    /// accept loop; a failed handshake (plaintext, an unknown certificate, no
    /// certificate where one is required) drops that connection only. The
    /// loop ends when the stream is dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<
        Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = tx.closed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            // Out of file descriptors and the like: back off.
                            tracing::warn!(error = %e, "accepting a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.server_config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A channel to `url`: over mutual TLS when `tls` is given (the URL must be
/// https://), plaintext otherwise (http://, e.g. `sharedcare dev` on
/// loopback).
pub fn channel(url: &str, tls: Option<&Tls>) -> Result<Channel, Error> {
    match tls {
        Some(tls) => tls.channel(url),
        None => crate::client::lazy_channel(url),
    }
}

/// A verifier of tokens against identity's JWKS, fetched over mutual TLS
/// when `tls` is given: `auth::remote_verifier` with the channel chosen here.
pub fn remote_verifier(
    cfg: &crate::config::AuthConfig,
    tls: Option<&Tls>,
) -> Result<Arc<crate::auth::Verifier>, Error> {
    Ok(Arc::new(crate::auth::grpc_verifier(
        cfg,
        channel(&cfg.identity_url, tls)?,
    )))
}

/// Connects TCP, then TLS with the host of the URL as the server name.
#[derive(Clone)]
struct Connector {
    tls: Tls,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, io::Error>>
            + Send,
    >,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.client_config();
        Box::pin(async move {
            let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
            let host = uri.host().ok_or_else(|| invalid("URL has no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("URL host is not a valid server name"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A throwaway certificate authority for tests: a CA, and certificates it
/// issues for `localhost` and `127.0.0.1` (server and client use), written
/// as PEM files in a temp dir.
#[cfg(any(test, feature = "testing"))]
pub mod test_pki {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use super::{ClientAuth, TlsConfig};

    pub struct TestPki {
        dir: tempfile::TempDir,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Default for TestPki {
        fn default() -> Self {
            Self::new()
        }
    }

    impl TestPki {
        /// A new CA; its certificate is `ca_file()`.
        pub fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params
                .distinguished_name
                .push(DnType::CommonName, "sharedcare test CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).expect("CA certificate");
            std::fs::write(dir.path().join("ca.crt"), cert.pem()).expect("write ca.crt");
            TestPki {
                dir,
                issuer: Issuer::new(params, key),
            }
        }

        pub fn dir(&self) -> &Path {
            self.dir.path()
        }

        pub fn ca_file(&self) -> PathBuf {
            self.dir.path().join("ca.crt")
        }

        /// Issues (or re-issues, overwriting the files) `<name>.crt` and
        /// `<name>.key`; returns the certificate's DER.
        pub fn issue(&self, name: &str) -> Vec<u8> {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).expect("certificate");
            // The key first: a reload in between sees a mismatch and waits.
            std::fs::write(self.key_file(name), key.serialize_pem()).expect("write key");
            std::fs::write(self.cert_file(name), cert.pem()).expect("write certificate");
            cert.der().to_vec()
        }

        pub fn cert_file(&self, name: &str) -> PathBuf {
            self.dir.path().join(format!("{name}.crt"))
        }

        pub fn key_file(&self, name: &str) -> PathBuf {
            self.dir.path().join(format!("{name}.key"))
        }

        /// Issues `name` and returns TLS settings using it, checked every
        /// 100 ms for a change.
        pub fn config(&self, name: &str) -> TlsConfig {
            self.issue(name);
            TlsConfig {
                enabled: true,
                cert_file: Some(self.cert_file(name)),
                key_file: Some(self.key_file(name)),
                ca_file: Some(self.ca_file()),
                client_auth: ClientAuth::Required,
                reload_interval_ms: 100,
            }
        }

        /// The same settings as `SHAREDCARE_TLS__*` variables.
        pub fn env(&self, name: &str) -> Vec<(String, String)> {
            let cfg = self.config(name);
            let path = |p: Option<PathBuf>| p.unwrap_or_default().display().to_string();
            vec![
                ("SHAREDCARE_TLS__ENABLED".into(), "true".into()),
                ("SHAREDCARE_TLS__CERT_FILE".into(), path(cfg.cert_file)),
                ("SHAREDCARE_TLS__KEY_FILE".into(), path(cfg.key_file)),
                ("SHAREDCARE_TLS__CA_FILE".into(), path(cfg.ca_file)),
                (
                    "SHAREDCARE_TLS__RELOAD_INTERVAL_MS".into(),
                    cfg.reload_interval_ms.to_string(),
                ),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{test_pki::TestPki, *};

    #[test]
    fn off_by_default_and_then_needs_no_files() {
        let cfg = TlsConfig::default();
        assert!(!cfg.enabled);
        cfg.validate().expect("valid");
        assert!(Tls::from_config(&cfg).expect("ok").is_none());
    }

    #[test]
    fn enabled_without_files_names_the_key() {
        let cfg = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        };
        let err = cfg.validate().expect_err("no cert");
        assert!(err.to_string().contains("tls.cert_file"), "{err}");
        let pki = TestPki::new();
        let cfg = TlsConfig {
            ca_file: None,
            ..pki.config("svc")
        };
        let err = cfg.validate().expect_err("no CA");
        assert!(err.to_string().contains("tls.ca_file"), "{err}");
    }

    #[test]
    fn garbage_names_the_key_and_file_but_never_the_material() {
        let pki = TestPki::new();
        let cfg = pki.config("svc");
        cfg.validate().expect("a good set is valid");

        let key_pem = std::fs::read_to_string(pki.key_file("svc")).expect("key");
        let lines: Vec<&str> = key_pem.lines().collect();
        let secret_line = lines[1].to_owned();
        // A damaged key, made from the one just generated: its own header
        // and footer around a body cut short, so it neither parses nor
        // matches.
        let damaged = [
            lines[0],
            &format!("{secret_line}!!"),
            lines[lines.len() - 1],
        ];
        std::fs::write(pki.key_file("svc"), damaged.join("\n") + "\n").expect("write");
        let err = cfg.validate().expect_err("bad key").to_string();
        assert!(err.contains("tls.key_file"), "{err}");
        assert!(err.contains("svc.key"), "{err}");
        assert!(!err.contains(&secret_line), "{err}");

        pki.issue("svc");
        std::fs::write(pki.cert_file("svc"), "not a certificate").expect("write");
        let err = cfg.validate().expect_err("bad cert").to_string();
        assert!(
            err.contains("tls.cert_file") && err.contains("svc.crt"),
            "{err}"
        );

        let missing = TlsConfig {
            ca_file: Some(pki.dir().join("absent.crt")),
            ..pki.config("svc")
        };
        let err = missing.validate().expect_err("no CA file").to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("absent.crt"),
            "{err}"
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let pki = TestPki::new();
        let cfg = pki.config("a");
        pki.issue("b");
        let crossed = TlsConfig {
            key_file: Some(pki.key_file("b")),
            ..cfg
        };
        let err = crossed.validate().expect_err("mismatch").to_string();
        assert!(err.contains("tls.key_file"), "{err}");
    }

    #[test]
    fn urls_follow_the_switch() {
        let on = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        };
        let off = TlsConfig::default();
        on.check_url("auth.identity_url", "https://identity:50051")
            .expect("https with TLS");
        off.check_url("auth.identity_url", "http://127.0.0.1:50051")
            .expect("http without");
        let err = on
            .check_url("auth.identity_url", "http://identity:50051")
            .expect_err("plaintext URL with TLS on");
        assert!(err.to_string().contains("auth.identity_url"), "{err}");
        assert!(off.check_url("x", "https://a:1").is_err());
    }

    #[test]
    fn a_changed_certificate_is_picked_up_after_the_interval() {
        let pki = TestPki::new();
        let tls = Tls::from_config(&pki.config("svc"))
            .expect("loads")
            .expect("enabled");
        let before = tls.server_config();
        assert!(
            Arc::ptr_eq(&before, &tls.server_config()),
            "no change, no reload"
        );
        pki.issue("svc");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::ptr_eq(&before, &tls.server_config()) {
            assert!(Instant::now() < deadline, "never reloaded");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_broken_file_keeps_the_previous_set() {
        let pki = TestPki::new();
        let tls = Tls::from_config(&pki.config("svc"))
            .expect("loads")
            .expect("enabled");
        let before = tls.server_config();
        std::fs::write(pki.cert_file("svc"), "garbage").expect("write");
        std::thread::sleep(Duration::from_millis(150));
        assert!(Arc::ptr_eq(&before, &tls.server_config()));
    }
}

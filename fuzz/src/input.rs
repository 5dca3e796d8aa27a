//! Reading structured values off the front of a fuzz input. Past the end
//! every read gives zero or nothing, so any input is a valid one.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let got = self.take(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.take(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes: fewer when the input runs out.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// One edit of a byte string, read from the input: how the targets derive
/// a near miss from a valid token, cursor, note or proof.
pub fn mutate(original: &[u8], input: &mut Input<'_>) -> Vec<u8> {
    let mut out = original.to_vec();
    let edits = 1 + usize::from(input.u8() % 4);
    for _ in 0..edits {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let at = usize::from(input.u16());
        let byte = input.u8();
        let len = out.len();
        match op % 6 {
            0 if len > 0 => out[at % len] ^= byte.max(1),
            1 if len > 0 => out[at % len] = byte,
            2 => out.insert(at % (len + 1), byte),
            3 if len > 0 => {
                out.remove(at % len);
            }
            4 => out.truncate(at % (len + 1)),
            5 if len > 0 => {
                let i = at % len;
                let j = usize::from(byte) % len;
                out.swap(i, j);
            }
            _ => out.push(byte),
        }
    }
    out
}

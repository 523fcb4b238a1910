//! Secrets in memory: bytes that are zeroized when dropped and never printed (the database
//! password, the HMAC key, TLS keys). Everything that holds a secret holds it as a [`Secret`].

use std::fmt;

use zeroize::Zeroizing;

/// A secret's bytes, zeroized when dropped and never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0[..] == other.0[..]
    }
}

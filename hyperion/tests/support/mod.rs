//! Helpers shared by the tests that need real certificates (`tls.rs`, `netns.rs`): a test CA
//! made with rcgen for each run, and the certificates it signs.

#![allow(dead_code)] // Each test crate uses the part it needs.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test CA and what it signs.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    /// A certificate for `dns` (and 127.0.0.1), for server and client authentication.
    pub fn issue(&self, dns: &str) -> (String, String) {
        self.issue_for(dns, &["127.0.0.1"])
    }

    /// A certificate naming `dns` and the IP addresses `ips`, for server and client
    /// authentication: (certificate PEM, key PEM).
    pub fn issue_for(&self, dns: &str, ips: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        params.distinguished_name.push(DnType::CommonName, dns);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

//! The access-control list (`HYPERION_ACL_FILE`): which identities may do which operations on
//! which keys.
//!
//! Format (TOML), one `[[rule]]` per identity and grant:
//!
//! ```toml
//! [[rule]]
//! certificate = "checkout.clients.example"   # a client certificate's DNS name
//! operations = ["read", "write"]            # read: Get, BatchGet; write: Set, Delete;
//!                                           # admin: NodeAdmin.Status
//! key_prefixes = ["cart/", "session/"]      # optional; absent: every key
//!
//! [[rule]]
//! subject = "reporting"                     # a bearer token's `sub` claim
//! operations = ["read"]
//! ```
//!
//! Contract: whatever no rule allows is refused. Rules name certificates and token subjects
//! separately, so a token can never claim a certificate's identity or the reverse.

use serde::Deserialize;

/// The operations a rule may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `Get`, `BatchGet`.
    Read,
    /// `Set`, `Delete`.
    Write,
    /// `NodeAdmin.Status`.
    Admin,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Admin => "admin",
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A client certificate (the name is its DNS name).
    Certificate,
    /// A bearer token (the name is its subject).
    Token,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    certificate: Option<String>,
    subject: Option<String>,
    operations: Vec<Operation>,
    #[serde(default)]
    key_prefixes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// A parsed ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
}

/// Largest ACL file read.
pub const ACL_FILE_BYTES_MAX: u64 = 1 << 20;

impl Acl {
    /// Parses the TOML text of an ACL file.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let file: AclFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        for (index, rule) in file.rule.iter().enumerate() {
            match (&rule.certificate, &rule.subject) {
                (Some(name), None) | (None, Some(name)) if !name.is_empty() => {}
                _ => {
                    return Err(format!(
                        "rule[{index}]: name exactly one of `certificate` or `subject`"
                    ))
                }
            }
            if rule.operations.is_empty() {
                return Err(format!("rule[{index}]: `operations` is empty"));
            }
        }
        Ok(Acl { rules: file.rule })
    }

    /// Reads and parses an ACL file.
    pub fn load(path: &std::path::Path) -> Result<Acl, String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(ACL_FILE_BYTES_MAX).read_to_string(&mut text))
            .map_err(|e| format!("cannot read: {e}"))?;
        Acl::parse(&text)
    }

    /// Whether the caller `name` (proved by `proof`) may do `operation`, on `key` if given.
    pub fn allows(
        &self,
        name: &str,
        proof: Proof,
        operation: Operation,
        key: Option<&[u8]>,
    ) -> bool {
        self.rules.iter().any(|rule| {
            let names = match proof {
                Proof::Certificate => rule.certificate.as_deref(),
                Proof::Token => rule.subject.as_deref(),
            };
            names == Some(name)
                && rule.operations.contains(&operation)
                && match (&rule.key_prefixes, key) {
                    (None, _) | (_, None) => true,
                    (Some(prefixes), Some(key)) => {
                        prefixes.iter().any(|p| key.starts_with(p.as_bytes()))
                    }
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = r#"
        [[rule]]
        certificate = "checkout"
        operations = ["read", "write"]
        key_prefixes = ["cart/"]

        [[rule]]
        subject = "reporting"
        operations = ["read"]

        [[rule]]
        certificate = "ops"
        operations = ["admin"]
    "#;

    #[test]
    fn rules_grant_operations_on_prefixes_to_one_kind_of_identity() {
        let acl = Acl::parse(ACL).unwrap();
        let cert = Proof::Certificate;
        assert!(acl.allows("checkout", cert, Operation::Write, Some(b"cart/1")));
        assert!(!acl.allows("checkout", cert, Operation::Write, Some(b"user/1")));
        assert!(!acl.allows("checkout", Proof::Token, Operation::Read, Some(b"cart/1")));
        assert!(acl.allows("reporting", Proof::Token, Operation::Read, Some(b"any")));
        assert!(!acl.allows("reporting", Proof::Token, Operation::Write, Some(b"any")));
        assert!(acl.allows("ops", cert, Operation::Admin, None));
        assert!(!acl.allows("nobody", cert, Operation::Read, Some(b"cart/1")));
    }

    #[test]
    fn malformed_acls_are_refused_with_the_rule() {
        let both = "[[rule]]\ncertificate = \"a\"\nsubject = \"b\"\noperations = [\"read\"]\n";
        assert!(Acl::parse(both).unwrap_err().starts_with("rule[0]"));
        let unknown_op = "[[rule]]\nsubject = \"b\"\noperations = [\"delete\"]\n";
        assert!(Acl::parse(unknown_op).is_err());
        let typo = "[[rule]]\nsubject = \"b\"\noperations = [\"read\"]\nprefix = [\"a\"]\n";
        assert!(Acl::parse(typo).is_err());
        assert_eq!(Acl::parse("").unwrap().rules.len(), 0);
    }
}

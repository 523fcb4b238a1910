use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::{Code, Request};

use super::*;
use crate::runtime::ConnectionInfo;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
const NOW_MS: u64 = 1_800_000_000_000;

fn members() -> Vec<String> {
    vec!["n1".to_string(), "n2".to_string(), "n3".to_string()]
}

fn strict() -> AuthRules {
    AuthRules {
        require_peer_identity: true,
        require_client_identity: true,
    }
}

fn authority() -> Authority {
    Authority::new(strict(), members(), NodeClock::starting_at_ms(NOW_MS))
}

fn request(certificate: Option<PresentedCertificate>) -> Request<()> {
    let mut request = Request::new(());
    if let Some(certificate) = certificate {
        let peer: Arc<dyn std::any::Any + Send + Sync> = Arc::new(certificate);
        request.extensions_mut().insert(ConnectionInfo {
            remote_addr: None,
            peer: Some(peer),
        });
    }
    request
}

fn member(name: &str) -> Option<PresentedCertificate> {
    Some(PresentedCertificate::Member {
        name: name.to_string(),
    })
}

fn client(name: &str) -> Option<PresentedCertificate> {
    Some(PresentedCertificate::Client {
        name: name.to_string(),
    })
}

#[test]
fn raft_service_serves_members_only_and_names_the_sender() {
    let authority = authority();
    assert_eq!(
        authority.raft_sender(&request(member("n2"))).unwrap(),
        Some(2)
    );
    let none = authority.raft_sender(&request(None)).unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let a_client = authority
        .raft_sender(&request(client("alice")))
        .unwrap_err();
    assert_eq!(a_client.code(), Code::PermissionDenied);
    assert!(
        a_client.message().contains("only cluster members"),
        "{a_client:?}"
    );
    let stranger = authority.raft_sender(&request(member("n4"))).unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let rejected = authority
        .raft_sender(&request(Some(PresentedCertificate::Rejected {
            reason: "unknown issuer".to_string(),
        })))
        .unwrap_err();
    assert_eq!(rejected.code(), Code::PermissionDenied);
    // The pre-fix behaviour, and development mode, check nothing.
    let open = authority.with_unauthenticated_raft(true);
    assert_eq!(open.raft_sender(&request(client("alice"))).unwrap(), None);
    let dev = Authority::unchecked(NodeClock::starting_at_ms(NOW_MS));
    assert_eq!(dev.raft_sender(&request(None)).unwrap(), None);
}

#[test]
fn clients_need_an_identity_and_the_acl_names_the_operation_never_the_key() {
    let acl = Acl::parse(
        "[[rule]]\ncertificate = \"alice\"\noperations = [\"read\", \"write\"]\nkey_prefixes = [\"cart/\"]\n",
    )
    .unwrap();
    let authority = authority().with_acl(Arc::new(Reloadable::new(acl)));
    let none = authority
        .authorize(&request(None), Operation::Read, &[b"cart/1"])
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let alice = request(client("alice"));
    authority
        .authorize(&alice, Operation::Write, &[b"cart/1"])
        .unwrap();
    let secret_key = b"user/secret-session-id";
    let denied = authority
        .authorize(&alice, Operation::Write, &[secret_key])
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "`alice` may not write this key (HYPERION_ACL_FILE)"
    );
    let batch = authority
        .authorize(&alice, Operation::Read, &[b"cart/1", secret_key])
        .unwrap_err();
    assert!(batch.message().contains("keys[1]"), "{batch:?}");
    assert!(!batch.message().contains("secret-session-id"));
    let bob = authority
        .authorize(&request(client("bob")), Operation::Read, &[b"cart/1"])
        .unwrap_err();
    assert_eq!(bob.code(), Code::PermissionDenied);
}

#[test]
fn without_an_acl_every_authenticated_caller_may_do_everything() {
    let authority = authority();
    let caller = authority
        .authorize(&request(client("anyone")), Operation::Write, &[b"k"])
        .unwrap();
    assert_eq!(
        caller,
        Caller::Client {
            name: "anyone".to_string(),
            proof: Proof::Certificate
        }
    );
}

#[test]
fn admin_api_keys_grant_admin_only_and_are_compared_whole() {
    let authority = authority().with_admin_keys(vec![Secret::new(b"k3y-one".to_vec())]);
    let with_key = |key: &'static str| {
        let mut request = request(None);
        request
            .metadata_mut()
            .insert(API_KEY_METADATA, key.parse().unwrap());
        request
    };
    assert_eq!(
        authority
            .authorize(&with_key("k3y-one"), Operation::Admin, &[])
            .unwrap(),
        Caller::AdminKey
    );
    let wrong = authority
        .authorize(&with_key("k3y-on"), Operation::Admin, &[])
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let not_admin = authority
        .authorize(&with_key("k3y-one"), Operation::Read, &[b"k"])
        .unwrap_err();
    assert_eq!(not_admin.code(), Code::PermissionDenied);
}

fn jwt_settings() -> JwtSettings {
    JwtSettings {
        jwks_file: format!("{FIXTURES}/jwks.json").into(),
        audience: "hyperion".to_string(),
        issuer: "https://auth.example".to_string(),
        leeway_s: 30,
    }
}

fn token(algorithm: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let read = |file: &str| std::fs::read(format!("{FIXTURES}/{file}")).unwrap();
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rs256.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("es256.pem")),
        _ => EncodingKey::from_ed_pem(&read("eddsa.pem")),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &key.unwrap()).unwrap()
}

fn claims(exp_offset_s: i64) -> serde_json::Value {
    let now_s = (NOW_MS / 1000) as i64;
    serde_json::json!({
        "sub": "svc-reporting",
        "aud": "hyperion",
        "iss": "https://auth.example",
        "exp": now_s + exp_offset_s,
        "nbf": now_s - 10,
    })
}

fn bearer(token: &str) -> Request<()> {
    let mut request = request(None);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[test]
fn bearer_tokens_of_each_algorithm_verify_against_the_jwks() {
    let keys = JwtKeys::load(&jwt_settings().jwks_file).unwrap();
    let authority = authority().with_jwt(jwt_settings(), Arc::new(Reloadable::new(keys)));
    for (algorithm, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let caller = authority
            .authorize(
                &bearer(&token(algorithm, kid, claims(60))),
                Operation::Read,
                &[b"k"],
            )
            .unwrap_or_else(|e| panic!("{algorithm:?}: {e:?}"));
        assert_eq!(
            caller,
            Caller::Client {
                name: "svc-reporting".to_string(),
                proof: Proof::Token
            }
        );
    }
}

#[test]
fn bearer_tokens_are_checked_for_time_audience_issuer_and_key() {
    let keys = JwtKeys::load(&jwt_settings().jwks_file).unwrap();
    let authority = authority().with_jwt(jwt_settings(), Arc::new(Reloadable::new(keys)));
    let refused = |token: String| {
        let status = authority
            .authorize(&bearer(&token), Operation::Read, &[b"k"])
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().starts_with("authorization:"), "{status:?}");
        status.message().to_string()
    };
    // Within the leeway an expired token still passes; beyond it, not.
    authority
        .authorize(
            &bearer(&token(Algorithm::ES256, "ec-1", claims(-20))),
            Operation::Read,
            &[],
        )
        .unwrap();
    assert!(refused(token(Algorithm::ES256, "ec-1", claims(-31))).contains("expired"));
    let mut future = claims(600);
    future["nbf"] = serde_json::json!(NOW_MS / 1000 + 120);
    assert!(refused(token(Algorithm::ES256, "ec-1", future)).contains("not valid yet"));
    let mut other_audience = claims(60);
    other_audience["aud"] = serde_json::json!("another-service");
    refused(token(Algorithm::RS256, "rsa-1", other_audience));
    let mut other_issuer = claims(60);
    other_issuer["iss"] = serde_json::json!("https://evil.example");
    refused(token(Algorithm::RS256, "rsa-1", other_issuer));
    // Signed by the EC key, but claiming the RSA key's id.
    refused(token(Algorithm::ES256, "rsa-1", claims(60)));
    refused("not.a.token".to_string());
    let mut missing_exp = claims(60);
    missing_exp.as_object_mut().unwrap().remove("exp");
    refused(token(Algorithm::EdDSA, "ed-1", missing_exp));
}

#[test]
fn hmac_and_unsigned_tokens_are_refused() {
    let keys = JwtKeys::load(&jwt_settings().jwks_file).unwrap();
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(60),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let error = keys
        .verify(&jwt_settings(), &hs, NOW_MS / 1000)
        .unwrap_err();
    assert!(error.contains("not accepted"), "{error}");
}

#[test]
fn simulated_identities_round_trip() {
    for certificate in [member("n1"), client("a"), None]
        .into_iter()
        .flatten()
        .chain([PresentedCertificate::Rejected {
            reason: "why".to_string(),
        }])
    {
        assert_eq!(
            PresentedCertificate::from_simulated(&certificate.simulated()),
            Some(certificate)
        );
    }
    assert_eq!(PresentedCertificate::from_simulated("root:x"), None);
}

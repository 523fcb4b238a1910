//! The gRPC health service (`grpc.health.v1`) on a real node over loopback: `Check` answers
//! SERVING once a leader is known and NOT_FOUND for a service the node does not have; an open
//! `Watch` starts with SERVING and, when the node shuts down, ends with NOT_SERVING without
//! holding the shutdown up. Reflection is checked by ci/interop.py with Python's standard client.

use std::time::Duration;

use hyperion::config::Config;
use hyperion::health_proto::health_check_response::ServingStatus;
use hyperion::health_proto::health_client::HealthClient;
use hyperion::health_proto::HealthCheckRequest;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn health_reports_serving_and_ends_a_watch_with_not_serving_on_shutdown() {
    let dir = std::env::temp_dir().join(format!("hyperion-health-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = None;
    config.data_dir = dir.join("data");
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let grpc = format!("http://{}", server.local_addr());
    let replica = server.replica();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let mut health = HealthClient::connect(grpc).await.unwrap();
    for _ in 0..200 {
        if hyperion::admin::readiness(&replica).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for service in ["", "hyperion.v1.CacheService"] {
        let answer = health.check(request(service)).await.unwrap().into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service `{service}`"
        );
    }
    let unknown = health.check(request("no.Such")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("no.Such"),
        "{}",
        unknown.message()
    );

    let mut watch = health
        .watch(request("hyperion.v1.CacheService"))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    stop.send(()).unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch answers within 10 s of shutdown")
        .unwrap()
        .expect("a last status");
    assert_eq!(last.status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch ends within 10 s of shutdown");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("an open watch does not hold the shutdown up")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

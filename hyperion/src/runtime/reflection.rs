//! gRPC server reflection (production build): `grpc.reflection.v1` and `v1alpha` (which
//! grpcurl and Python's grpcio-reflection ask for), over the descriptors a caller hands in.

/// `router` with both reflection services added, describing `file_descriptor_set`.
pub(super) fn add<L>(
    router: tonic::transport::server::Router<L>,
    file_descriptor_set: &'static [u8],
) -> Result<tonic::transport::server::Router<L>, String> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .build_v1()
        .map_err(|error| format!("reflection (v1): {error}"))?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .build_v1alpha()
        .map_err(|error| format!("reflection (v1alpha): {error}"))?;
    Ok(router.add_service(v1).add_service(v1alpha))
}

//! `crds/` must be what `crdgen` writes from the Rust types.

#[test]
fn crd_files_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (file, crd) in pg_paxos_operator::crd::all() {
        let on_disk = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            on_disk == pg_paxos_operator::crd::to_yaml(&crd),
            "crds/{file} is stale: run `cargo run -p pg-paxos-operator --bin crdgen`"
        );
    }
}

#[test]
fn the_schema_rejects_fewer_than_one_member_and_has_no_password_field() {
    let (_, crd) = &pg_paxos_operator::crd::all()[0];
    let json = serde_json::to_value(crd).unwrap();
    let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["members"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(spec["properties"]["members"]["default"], 3);
    let text = serde_json::to_string(crd).unwrap().to_lowercase();
    assert!(
        !text.contains("\"password\""),
        "a password field in the schema"
    );
    let scale = &json["spec"]["versions"][0]["subresources"]["scale"];
    assert_eq!(scale["specReplicasPath"], ".spec.members");
}

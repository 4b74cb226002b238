use super::*;

/// Compiles `source` as `t.proto` (with options.proto available) and
/// returns the events found in it.
fn events(source: &str) -> Result<Vec<EventSpec>, Error> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(MemoryResolver(vec![("t.proto".into(), source.into())]));
    resolver.add(bundled_resolver());
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file("t.proto")?;
    find_events(&compiler.descriptor_pool(), &["t.proto".to_owned()])
}

fn invalid_reason(source: &str) -> (String, String) {
    match events(source) {
        Err(Error::InvalidEvent { message, reason }) => (message, reason),
        other => panic!("expected InvalidEvent, got {other:?}"),
    }
}

const HEAD: &str = "syntax = \"proto3\";\npackage acme.v1;\nimport \"herald/v1/options.proto\";\n";

#[test]
fn reads_every_option_field() {
    let found = events(&format!(
        "{HEAD}message UserSignedUp {{
           option (herald.v1.event) = {{ topic: \"user.signup\" type: \"com.example.signed_up\"
                                        source: \"/svc\" key_field: \"user_id\" }};
           string user_id = 1;
         }}
         message Plain {{ string x = 1; }}"
    ))
    .unwrap();
    assert_eq!(
        found,
        [EventSpec {
            full_name: "acme.v1.UserSignedUp".into(),
            rust_path: "UserSignedUp".into(),
            module_file: "acme.v1.rs".into(),
            topic: "user.signup".into(),
            event_type: "com.example.signed_up".into(),
            source: "/svc".into(),
            key: Some(KeyField {
                proto_name: "user_id".into(),
                rust_name: "user_id".into(),
                is_string: true,
                optional: false,
            }),
        }]
    );
}

#[test]
fn type_defaults_to_full_name_and_source_to_empty() {
    let found = events(&format!(
        "{HEAD}message A {{ option (herald.v1.event) = {{ topic: \"t\" }}; }}"
    ))
    .unwrap();
    assert_eq!(found[0].event_type, "acme.v1.A");
    assert_eq!(found[0].source, "");
    assert_eq!(found[0].key, None);
}

#[test]
fn nested_messages_and_keywords_use_prost_names() {
    let found = events(&format!(
        "{HEAD}message Outer_msg {{
           message HTTPDone {{
             option (herald.v1.event) = {{ topic: \"t\" key_field: \"type\" }};
             optional uint64 type = 1;
           }}
         }}"
    ))
    .unwrap();
    assert_eq!(found[0].rust_path, "outer_msg::HttpDone");
    assert_eq!(
        found[0].key,
        Some(KeyField {
            proto_name: "type".into(),
            rust_name: "r#type".into(),
            is_string: false,
            optional: true,
        })
    );
}

#[test]
fn missing_topic_is_an_error() {
    let (message, reason) = invalid_reason(&format!(
        "{HEAD}message NoTopic {{ option (herald.v1.event) = {{ type: \"x\" }}; }}"
    ));
    assert_eq!(message, "acme.v1.NoTopic");
    assert!(reason.contains("topic"), "{reason}");
}

#[test]
fn key_field_must_exist() {
    let (message, reason) = invalid_reason(&format!(
        "{HEAD}message M {{ option (herald.v1.event) = {{ topic: \"t\" key_field: \"nope\" }}; string id = 1; }}"
    ));
    assert_eq!(message, "acme.v1.M");
    assert!(
        reason.contains("`nope`") && reason.contains("no field"),
        "{reason}"
    );
}

#[test]
fn key_field_must_be_scalar() {
    for (decl, what) in [
        ("repeated string k = 1;", "repeated"),
        ("map<string, string> k = 1;", "a map"),
        ("bytes k = 1;", "bytes"),
        ("double k = 1;", "floating point"),
        ("M2 k = 1;", "a message"),
        ("E k = 1;", "an enum"),
        ("oneof o { string k = 1; }", "oneof"),
    ] {
        let error = events(&format!(
            "{HEAD}message M2 {{}} enum E {{ E_UNSPECIFIED = 0; }}
             message M {{ option (herald.v1.event) = {{ topic: \"t\" key_field: \"k\" }}; {decl} }}"
        ))
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("acme.v1.M") && text.contains("`k`"), "{text}");
        assert!(text.contains(what), "{decl}: {text}");
    }
}

#[test]
fn rendered_impls_carry_header_constants_and_key() {
    let spec = |key| EventSpec {
        full_name: "p.M".into(),
        rust_path: "outer::M".into(),
        module_file: "p.rs".into(),
        topic: "t".into(),
        event_type: "quote\"d".into(),
        source: "".into(),
        key,
    };
    let keyless = render([&spec(None)]);
    assert!(keyless.contains(GENERATED_HEADER));
    assert!(keyless.contains("impl ::herald_client::Event for outer::M {"));
    assert!(keyless.contains("const TOPIC: &'static str = \"t\";"));
    assert!(keyless.contains("const TYPE: &'static str = \"quote\\\"d\";"));
    assert!(keyless.contains("const SOURCE: &'static str = \"\";"));
    assert!(!keyless.contains("fn key"));

    let key = |is_string, optional| {
        render([&spec(Some(KeyField {
            proto_name: "id".into(),
            rust_name: "id".into(),
            is_string,
            optional,
        }))])
    };
    assert!(key(true, false).contains("if self.id.is_empty()"));
    assert!(key(true, true).contains("self.id.clone().filter(|v| !v.is_empty())"));
    assert!(key(false, false).contains("Some(self.id.to_string())"));
    assert!(key(false, true).contains("self.id.map(|v| v.to_string())"));
}

#[test]
fn compile_writes_prost_code_with_the_impls_appended() {
    let dir = tempfile::tempdir().unwrap();
    let proto = dir.path().join("proto/acme/v1");
    std::fs::create_dir_all(&proto).unwrap();
    std::fs::write(
        proto.join("e.proto"),
        format!(
            "{HEAD}import \"acme/v1/imported.proto\";
             message Shipped {{ option (herald.v1.event) = {{ topic: \"ships\" key_field: \"n\" }}; int64 n = 1; Imported i = 2; }}"
        ),
    )
    .unwrap();
    std::fs::write(
        proto.join("imported.proto"),
        format!("{HEAD}message Imported {{ option (herald.v1.event) = {{ topic: \"imp\" }}; }}"),
    )
    .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let found = Builder::new()
        .include(dir.path().join("proto"))
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(&[proto.join("e.proto")])
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let code = std::fs::read_to_string(out.join("acme.v1.rs")).unwrap();
    assert!(code.contains("pub struct Shipped"), "{code}");
    assert!(code.contains("impl ::prost::Name for Shipped"), "{code}");
    assert!(
        code.contains("impl ::herald_client::Event for Shipped {"),
        "{code}"
    );
    assert!(code.contains("Some(self.n.to_string())"), "{code}");
    assert!(
        code.contains("impl ::herald_client::Event for Imported {"),
        "{code}"
    );
    assert_eq!(code.matches(GENERATED_HEADER).count(), 1, "{code}");
}

#[test]
fn compile_without_out_dir_outside_a_build_script_fails() {
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let error = Builder::new().compile(&["none.proto"]).unwrap_err();
    assert!(matches!(error, Error::NoOutDir));
}

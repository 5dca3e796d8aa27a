//! docs/access-model.md says exactly what the code enforces: its tables are
//! the services' access tables, rendered. `SHAREDCARE_BLESS=1` rewrites them.

use sharedcare_kit::access::AccessTable;

fn tables() -> [(&'static str, &'static AccessTable); 4] {
    [
        ("identity", &sharedcare_identity::policy::ACCESS),
        ("consent", &sharedcare_consent::policy::ACCESS),
        ("records", &sharedcare_records::policy::ACCESS),
        ("audit", &sharedcare_audit::policy::ACCESS),
    ]
}

/// The document with each `<!-- table:NAME -->` section holding the rows of
/// that service's table.
fn render(doc: &str) -> String {
    let mut out = doc.to_owned();
    for (name, table) in tables() {
        let open = format!("<!-- table:{name} -->\n");
        let start = out
            .find(&open)
            .unwrap_or_else(|| panic!("no {open:?} marker"))
            + open.len();
        let end = start
            + out[start..]
                .find("<!-- /table -->")
                .expect("a closing marker");
        out.replace_range(start..end, &table.markdown_rows());
    }
    out
}

#[test]
fn the_access_model_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/access-model.md");
    let doc = std::fs::read_to_string(&path).expect("docs/access-model.md");
    let rendered = render(&doc);
    if std::env::var_os("SHAREDCARE_BLESS").is_some() {
        std::fs::write(&path, &rendered).expect("rewrite the document");
        return;
    }
    assert!(
        rendered == doc,
        "docs/access-model.md is out of date with the services' access tables; \
         run `SHAREDCARE_BLESS=1 cargo test -p sharedcare-tests --test access_doc`"
    );
}

#[test]
fn every_rpc_of_every_service_has_a_row() {
    // The methods each service defines, from the compiled descriptor set.
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
        sharedcare_proto::FILE_DESCRIPTOR_SET,
    )
    .expect("descriptor set");
    for (name, table) in tables() {
        let (package, service) = table.service.rsplit_once('.').expect("qualified");
        let methods: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name() == service)
            .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            .collect();
        assert!(!methods.is_empty(), "{name}: service not found");
        for method in &methods {
            assert!(
                table.rule(method).is_some(),
                "{name}: {method} has no row in the access table"
            );
        }
        for rule in table.rules {
            assert!(
                methods.iter().any(|m| m == rule.method),
                "{name}: the row {} names no RPC",
                rule.method
            );
        }
    }
}

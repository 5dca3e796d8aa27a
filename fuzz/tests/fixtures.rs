//! The targets' fixtures are what the targets assume: the valid token
//! verifies, every request message in the descriptor set is fuzzed.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorSet;
use sharedcare_fuzz::proto_request::MESSAGES;

#[test]
fn every_request_message_in_the_descriptor_set_is_fuzzed() {
    let set = FileDescriptorSet::decode(sharedcare_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut requests = BTreeSet::new();
    let mut messages = BTreeSet::new();
    for file in &set.file {
        let package = file.package();
        for message in &file.message_type {
            let name = format!("{package}.{}", message.name());
            if name.ends_with("Request") {
                requests.insert(name.clone());
            }
            messages.insert(name);
        }
        for service in &file.service {
            for method in &service.method {
                requests.insert(method.input_type().trim_start_matches('.').to_owned());
            }
        }
    }
    let fuzzed: BTreeSet<String> = MESSAGES.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(fuzzed.len(), MESSAGES.len(), "a message is listed twice");
    let missing: Vec<_> = requests.difference(&fuzzed).collect();
    assert!(
        missing.is_empty(),
        "add to proto_request::MESSAGES: {missing:?}"
    );
    let unknown: Vec<_> = fuzzed.difference(&messages).collect();
    assert!(unknown.is_empty(), "not in the descriptor set: {unknown:?}");
}

#[test]
fn the_valid_token_verifies_and_its_claims_sign_the_same() {
    // Mode 0 of the token target: the token as a caller sends it.
    let mut input = vec![0u8];
    input.extend_from_slice(sharedcare_fuzz::token::valid_token().as_bytes());
    sharedcare_fuzz::token(&input);
    assert!(sharedcare_fuzz::token::verifies(
        sharedcare_fuzz::token::valid_token()
    ));
    let claims = serde_json::to_vec(&sharedcare_fuzz::token::valid_claims()).expect("claims");
    let header = sharedcare_fuzz::token::header_json();
    assert!(sharedcare_fuzz::token::verifies(
        &sharedcare_fuzz::token::sign_raw(&header, &claims)
    ));
}

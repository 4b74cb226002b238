//! Python backend: one `<file>_herald.py` next to protoc's `<file>_pb2.py`
//! for every `.proto` file that declares events. Per event message it emits
//! a typed binding, `herald.EventType[Msg]` (topic, CloudEvents type and
//! source, key extraction, full name), and two typed helpers:
//!
//! ```python
//! USER_SIGNED_UP: herald.EventType[signup_pb2.UserSignedUp] = herald.EventType(
//!     signup_pb2.UserSignedUp, topic="user.signup", type="com.example.user.signed_up",
//!     source="/services/signup", key=lambda m: m.user_id or None)
//! def user_signed_up_producer(client, **options) -> herald.Producer[signup_pb2.UserSignedUp]: ...
//! def user_signed_up_consumer(client, subscription, **options) -> herald.Consumer[signup_pb2.UserSignedUp]: ...
//! ```
//!
//! The options are typed with `Unpack[herald.ProducerOptions]` /
//! `Unpack[herald.ConsumerOptions]`, so mypy and pyright check them.

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_reflect::{Kind, MessageDescriptor};

use crate::{EventModel, GENERATED_NOTICE, OutputFile, Request, check_params};

/// Python keywords (and soft keywords that cannot be attribute names in
/// generated code): a field named like one is read with `getattr`.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Generates the Python files for `request`. No parameters.
pub fn generate(request: &Request) -> Result<Vec<OutputFile>, String> {
    check_params(request, &[])?;
    let mut out = Vec::new();
    for file in &request.files {
        let events: Vec<&EventModel> = request.events_in(file).collect();
        if events.is_empty() {
            continue;
        }
        let stem = file.name().trim_end_matches(".proto");
        let (dir, base) = match stem.rsplit_once('/') {
            Some((dir, base)) => (Some(dir), base),
            None => (None, stem),
        };
        // protoc's Python generator names modules this way.
        let pb2 = format!("{}_pb2", base.replace('-', "_"));
        let import = match dir {
            Some(dir) => format!("from {} import {pb2}", dir.replace('/', ".")),
            None => format!("import {pb2}"),
        };
        let mut code = format!(
            "# {GENERATED_NOTICE}\n# source: {name}\n\"\"\"Typed Herald producers and consumers for the events of {name}.\"\"\"\n\n\
             from __future__ import annotations\n\n\
             from typing import Unpack\n\n\
             import herald\n\
             {import}\n\n\
             __all__ = [\n",
            name = file.name()
        );
        let mut names = Vec::new();
        for event in &events {
            let ident = ident(&event.message);
            names.push(ident.to_shouty_snake_case());
            names.push(format!("{}_producer", ident.to_snake_case()));
            names.push(format!("{}_consumer", ident.to_snake_case()));
        }
        for name in &names {
            code.push_str(&format!("    {name:?},\n"));
        }
        code.push_str("]\n");
        for event in events {
            code.push_str(&render(event, &pb2));
        }
        out.push(OutputFile {
            name: format!(
                "{}/{}_herald.py",
                dir.unwrap_or("."),
                base.replace('-', "_")
            )
            .trim_start_matches("./")
            .to_owned(),
            content: code,
        });
    }
    Ok(out)
}

/// The message's path inside its file, e.g. `AccountEvents_Closed` for a
/// nested message (used to name the binding and helpers).
fn ident(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    let full = message.full_name();
    let local = if package.is_empty() {
        full
    } else {
        &full[package.len() + 1..]
    };
    local.replace('.', "_")
}

/// The Python expression of the message class, e.g.
/// `signup_pb2.AccountEvents.Closed`.
fn class_path(message: &MessageDescriptor, pb2: &str) -> String {
    let package = message.package_name();
    let full = message.full_name();
    let local = if package.is_empty() {
        full
    } else {
        &full[package.len() + 1..]
    };
    format!("{pb2}.{local}")
}

/// A Python string literal (JSON escaping is valid Python).
fn py_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The key lambda: the same key string the Rust client derives (empty
/// string → keyless; integers in decimal; bools as `true`/`false`; an unset
/// optional field → keyless).
fn key_lambda(event: &EventModel) -> Option<String> {
    let field = event.key_field.as_ref()?;
    let name = field.name();
    let get = if KEYWORDS.contains(&name) {
        format!("getattr(m, {})", py_str(name))
    } else {
        format!("m.{name}")
    };
    let value = match field.kind() {
        Kind::String => format!("{get} or None"),
        Kind::Bool => format!("(\"true\" if {get} else \"false\")"),
        _ => format!("str({get})"),
    };
    let optional = event.spec.key.as_ref().is_some_and(|k| k.optional);
    Some(if optional {
        format!(
            "lambda m: ({value}) if m.HasField({}) else None",
            py_str(name)
        )
    } else {
        format!("lambda m: {value}")
    })
}

fn render(event: &EventModel, pb2: &str) -> String {
    let ident = ident(&event.message);
    let constant = ident.to_shouty_snake_case();
    let snake = ident.to_snake_case();
    let class = class_path(&event.message, pb2);
    let spec = &event.spec;
    let key = key_lambda(event)
        .map(|k| format!("    key={k},\n"))
        .unwrap_or_default();
    let key_doc = match &spec.key {
        Some(k) => format!("keyed by `{}`", k.proto_name),
        None => "keyless".to_owned(),
    };
    format!(
        r#"

{constant}: herald.EventType[{class}] = herald.EventType(
    {class},
    topic={topic},
    type={ty},
    source={source},
{key})
"""`{full}` events: topic `{topic_doc}`, {key_doc}."""


def {snake}_producer(
    client: herald.Client, **options: Unpack[herald.ProducerOptions]
) -> herald.Producer[{class}]:
    """A producer of `{full}` events (see `herald.Client.producer`)."""
    return client.producer({constant}, **options)


def {snake}_consumer(
    client: herald.Client,
    subscription: str,
    **options: Unpack[herald.ConsumerOptions],
) -> herald.Consumer[{class}]:
    """A consumer of `{full}` events on `subscription` (see `herald.Client.consumer`)."""
    return client.consumer({constant}, subscription, **options)
"#,
        topic = py_str(&spec.topic),
        ty = py_str(&spec.event_type),
        source = py_str(&spec.source),
        full = spec.full_name,
        topic_doc = spec.topic,
    )
}

#[cfg(test)]
mod tests {
    use crate::GENERATED_NOTICE;
    use crate::tests::{SIGNUP, run_plugin};

    #[test]
    fn emits_one_module_per_file_next_to_the_pb2() {
        let files = run_plugin(&[SIGNUP], "lang=python").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "acme/signup/v1/signup_herald.py");
        let code = &files[0].content;
        assert!(code.starts_with(&format!(
            "# {GENERATED_NOTICE}\n# source: acme/signup/v1/signup.proto\n"
        )));
        assert!(
            code.contains("from acme.signup.v1 import signup_pb2\n"),
            "{code}"
        );
    }

    #[test]
    fn binds_topic_type_source_and_key() {
        let files = run_plugin(&[SIGNUP], "lang=python").unwrap();
        let code = &files[0].content;
        assert!(code.contains(
            "USER_SIGNED_UP: herald.EventType[signup_pb2.UserSignedUp] = herald.EventType(\n    signup_pb2.UserSignedUp,\n    topic=\"user.signup\",\n    type=\"com.acme.user.signed_up\",\n    source=\"/services/signup\",\n    key=lambda m: m.user_id or None,\n)"
        ), "{code}");
        assert!(code.contains("def user_signed_up_producer(\n    client: herald.Client, **options: Unpack[herald.ProducerOptions]\n) -> herald.Producer[signup_pb2.UserSignedUp]:"));
        assert!(code.contains("def user_signed_up_consumer("));
        assert!(!code.contains("PlainMessage"));
    }

    #[test]
    fn nested_messages_default_type_and_integer_keys() {
        let files = run_plugin(&[SIGNUP], "lang=python").unwrap();
        let code = &files[0].content;
        // AccountEvents.Closed: no type, no source, no key.
        assert!(code.contains(
            "ACCOUNT_EVENTS_CLOSED: herald.EventType[signup_pb2.AccountEvents.Closed] = herald.EventType(\n    signup_pb2.AccountEvents.Closed,\n    topic=\"account.closed\",\n    type=\"acme.signup.v1.AccountEvents.Closed\",\n    source=\"\",\n)"
        ), "{code}");
        assert!(code.contains("def account_events_closed_consumer("));

        let keyed = (
            "k.proto",
            r#"syntax = "proto3";
package k;
import "herald/v1/options.proto";
message ByNumber { option (herald.v1.event) = { topic: "n" key_field: "n" }; uint64 n = 1; }
message ByFlag { option (herald.v1.event) = { topic: "f" key_field: "from" }; bool from = 1; }
message ByOptional { option (herald.v1.event) = { topic: "o" key_field: "id" }; optional string id = 1; }
"#,
        );
        let files = run_plugin(&[keyed], "lang=python").unwrap();
        assert_eq!(files[0].name, "k_herald.py");
        let code = &files[0].content;
        assert!(code.contains("import k_pb2\n"), "{code}");
        assert!(code.contains("key=lambda m: str(m.n),"), "{code}");
        assert!(
            code.contains("key=lambda m: (\"true\" if getattr(m, \"from\") else \"false\"),"),
            "{code}"
        );
        assert!(
            code.contains("key=lambda m: (m.id or None) if m.HasField(\"id\") else None,"),
            "{code}"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let odd = (
            "odd.proto",
            r#"syntax = "proto3";
import "herald/v1/options.proto";
message Odd { option (herald.v1.event) = { topic: "t" source: "/a\"b\\c" }; string x = 1; }
"#,
        );
        let files = run_plugin(&[odd], "lang=python").unwrap();
        assert!(
            files[0].content.contains(r#"source="/a\"b\\c","#),
            "{}",
            files[0].content
        );
    }

    #[test]
    fn unknown_parameters_are_refused() {
        let err = run_plugin(&[SIGNUP], "lang=python,paths=source_relative").unwrap_err();
        assert!(err.contains("unknown parameter `paths`"), "{err}");
    }
}

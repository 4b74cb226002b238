//! TypeScript backend: one `<file>_herald.ts` per `.proto` file that
//! declares events, next to the `<file>_pb.ts` protoc-gen-es (v2) writes.
//! For every event message it exports a typed binding built with the SDK's
//! `defineEvent` (topic, CloudEvents type and source, key extraction; the
//! full message name and the decoder come from the protoc-gen-es schema), and
//! two convenience constructors:
//!
//! ```ts
//! export const UserSignedUpEvent = defineEvent(UserSignedUpSchema, {
//!   topic: "user.signup", type: "com.example.user.signed_up",
//!   source: "/services/signup", key: (event: UserSignedUp): string => event.userId,
//! });
//! export function newUserSignedUpProducer(client: HeraldClient, options?: ProducerOptions): Producer<UserSignedUp>;
//! export function subscribeUserSignedUp(client: HeraldClient, options: ConsumerOptions): Promise<Consumer<UserSignedUp>>;
//! ```
//!
//! Parameters (all optional):
//! - `import_extension=js|ts|none` (default `js`): the extension of the
//!   relative import of `<file>_pb`; use the same value as protoc-gen-es.
//! - `sdk_import=SPECIFIER` (default `@herald/sdk`): where the SDK is
//!   imported from.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::{EventModel, GENERATED_NOTICE, OutputFile, Request, check_params};

/// The parameters this backend knows.
const PARAMS: &[&str] = &["import_extension", "sdk_import"];

/// Generates one `<file>_herald.ts` per file of `request` that declares events.
pub fn generate(request: &Request) -> Result<Vec<OutputFile>, String> {
    check_params(request, PARAMS)?;
    let extension = match request
        .params
        .get("import_extension")
        .map(String::as_str)
        .unwrap_or("js")
    {
        "js" => ".js",
        "ts" => ".ts",
        "none" | "" => "",
        other => {
            return Err(format!(
                "protoc-gen-herald: import_extension=`{other}` is not one of js, ts, none \
                 (use the value you give protoc-gen-es)"
            ));
        }
    };
    let sdk = request
        .params
        .get("sdk_import")
        .map(String::as_str)
        .unwrap_or("@herald/sdk");
    if sdk.is_empty() || sdk.contains(['"', '\\', '\n']) {
        return Err(format!(
            "protoc-gen-herald: sdk_import=`{sdk}` is not a module specifier, \
             e.g. sdk_import=@herald/sdk"
        ));
    }

    let mut out = Vec::new();
    for file in &request.files {
        let events: Vec<&EventModel> = request.events_in(file).collect();
        if events.is_empty() {
            continue;
        }
        let stem = file.name().trim_end_matches(".proto");
        let base = stem.rsplit('/').next().unwrap_or(stem);
        let pb_module = format!("./{base}_pb{extension}");

        let mut value_imports = Vec::new();
        let mut type_imports = Vec::new();
        let mut body = String::new();
        let mut taken = std::collections::BTreeSet::new();
        for event in &events {
            let shape = shape_name(&event.message);
            let schema = safe_identifier(&format!("{}Schema", identifier(&event.message)));
            let binding = format!("{}Event", identifier(&event.message));
            for name in [
                binding.clone(),
                format!("new{}Producer", identifier(&event.message)),
                format!("subscribe{}", identifier(&event.message)),
            ] {
                if file.messages().any(|m| identifier(&m) == name) || !taken.insert(name.clone()) {
                    return Err(format!(
                        "protoc-gen-herald: the TypeScript name `{name}` generated for event {} \
                         clashes with another name in {}; rename one of the messages",
                        event.message.full_name(),
                        file.name()
                    ));
                }
            }
            value_imports.push(schema.clone());
            type_imports.push(shape.clone());
            body.push_str(&render_event(event, &shape, &schema, &binding));
        }

        let mut content = format!(
            "// {GENERATED_NOTICE}\n// source: {}\n/* eslint-disable */\n\n",
            file.name()
        );
        content.push_str(&format!("import {{ defineEvent }} from \"{sdk}\";\n"));
        content.push_str(&format!(
            "import type {{ Consumer, ConsumerOptions, HeraldClient, Producer, ProducerOptions }} from \"{sdk}\";\n"
        ));
        content.push_str(&format!(
            "import {{ {} }} from \"{pb_module}\";\n",
            value_imports.join(", ")
        ));
        content.push_str(&format!(
            "import type {{ {} }} from \"{pb_module}\";\n",
            type_imports.join(", ")
        ));
        content.push_str(&body);
        out.push(OutputFile {
            name: format!("{stem}_herald.ts"),
            content,
        });
    }
    Ok(out)
}

/// The binding and the two constructors of one event.
fn render_event(event: &EventModel, shape: &str, schema: &str, binding: &str) -> String {
    let spec = &event.spec;
    let name = identifier(&event.message);
    let key_doc = match &event.key_field {
        Some(field) => format!(", keyed by `{}`", field.name()),
        None => ", keyless".to_owned(),
    };
    let source_doc = if spec.source.is_empty() {
        " (no default source: set one with the producer's `source` option)".to_owned()
    } else {
        format!(" from source {}", ts_string(&spec.source))
    };
    let key_line = match &event.key_field {
        Some(field) => format!(
            "  key: (event: {shape}): string => {},\n",
            key_expression(field)
        ),
        None => String::new(),
    };
    format!(
        r#"
/**
 * Herald binding of `{full}`: published to topic {topic} as CloudEvents
 * type {etype}{source_doc}{key_doc}.
 */
export const {binding} = defineEvent({schema}, {{
  topic: {topic},
  type: {etype},
  source: {source},
{key_line}}});

/** A batching producer of `{full}` events (HeraldClient.producer with {binding}). */
export function new{name}Producer(client: HeraldClient, options?: ProducerOptions): Producer<{shape}> {{
  return client.producer({binding}, options);
}}

/** Attaches a consumer of `{full}` events (HeraldClient.subscribe with {binding}). */
export function subscribe{name}(client: HeraldClient, options: ConsumerOptions): Promise<Consumer<{shape}>> {{
  return client.subscribe({binding}, options);
}}
"#,
        full = spec.full_name,
        topic = ts_string(&spec.topic),
        etype = ts_string(&spec.event_type),
        source = ts_string(&spec.source),
    )
}

/// Reads the key from `event` as a string: strings as they are, integers
/// (bigint for 64-bit ones) and bools in decimal / `true`/`false`; an unset
/// proto3 `optional` field gives the empty key.
fn key_expression(field: &FieldDescriptor) -> String {
    let access = format!("event.{}", local_name(field.name()));
    let optional = field.field_descriptor_proto().proto3_optional();
    match (field.kind(), optional) {
        (Kind::String, false) => access,
        (Kind::String, true) => format!("{access} ?? \"\""),
        (_, false) => format!("String({access})"),
        (_, true) => format!("{access} === undefined ? \"\" : String({access})"),
    }
}

/// protoc-gen-es's name for the message's TypeScript type: the name inside
/// its package with nested names joined by `_`, reserved words escaped.
fn shape_name(message: &MessageDescriptor) -> String {
    safe_identifier(&identifier(message))
}

/// The message's name inside its package, `.` replaced by `_`.
fn identifier(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    let full = message.full_name();
    let local = if package.is_empty() {
        full
    } else {
        &full[package.len() + 1..]
    };
    local.replace('.', "_")
}

/// The property name protoc-gen-es gives a field (protoCamelCase, with
/// JavaScript's built-in property names escaped).
fn local_name(proto_name: &str) -> String {
    let mut out = String::with_capacity(proto_name.len());
    let mut cap_next = false;
    for c in proto_name.chars() {
        match c {
            '_' => cap_next = true,
            '0'..='9' => {
                out.push(c);
                cap_next = false;
            }
            _ if cap_next => {
                out.extend(c.to_uppercase());
                cap_next = false;
            }
            _ => out.push(c),
        }
    }
    if ["constructor", "toString", "toJSON", "valueOf"].contains(&out.as_str()) {
        out.push('$');
    }
    out
}

/// Escapes identifiers protoc-gen-es escapes (ECMAScript/TypeScript reserved
/// words and the names its runtime uses) by appending `$`.
fn safe_identifier(name: &str) -> String {
    const RESERVED: &str = "break case catch class const continue debugger default delete do \
        else export extends false finally for function if import in instanceof new null return \
        super switch this throw true try typeof var void while with yield enum implements \
        interface let package private protected public static Object bigint number boolean \
        string object globalThis Uint8Array Partial";
    if RESERVED.split_whitespace().any(|reserved| reserved == name) {
        format!("{name}$")
    } else {
        name.to_owned()
    }
}

/// A TypeScript string literal.
fn ts_string(s: &str) -> String {
    // JSON string syntax is valid TypeScript string syntax.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{SIGNUP, run_plugin};

    fn signup_file() -> OutputFile {
        let files = run_plugin(&[SIGNUP], "lang=typescript").unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        files.into_iter().next().unwrap()
    }

    #[test]
    fn one_file_per_proto_next_to_protoc_gen_es_output() {
        let file = signup_file();
        assert_eq!(file.name, "acme/signup/v1/signup_herald.ts");
        assert!(
            file.content.starts_with(&format!(
                "// {GENERATED_NOTICE}\n// source: acme/signup/v1/signup.proto\n"
            )),
            "{}",
            file.content
        );
        assert!(file.content.contains("from \"./signup_pb.js\";"));
        assert!(
            file.content
                .contains("import { defineEvent } from \"@herald/sdk\";")
        );
    }

    #[test]
    fn binding_carries_topic_type_source_and_key() {
        let code = signup_file().content;
        assert!(
            code.contains(
                "export const UserSignedUpEvent = defineEvent(UserSignedUpSchema, {\n  topic: \"user.signup\",\n  type: \"com.acme.user.signed_up\",\n  source: \"/services/signup\",\n  key: (event: UserSignedUp): string => event.userId,\n});"
            ),
            "{code}"
        );
        assert!(code.contains(
            "export function newUserSignedUpProducer(client: HeraldClient, options?: ProducerOptions): Producer<UserSignedUp> {"
        ));
        assert!(code.contains(
            "export function subscribeUserSignedUp(client: HeraldClient, options: ConsumerOptions): Promise<Consumer<UserSignedUp>> {"
        ));
        assert!(!code.contains("PlainMessage"));
    }

    #[test]
    fn nested_messages_and_integer_keys() {
        let code = signup_file().content;
        // AccountEvents.Closed: nested name joined by `_`, type defaults to
        // the full name, empty source, keyless.
        assert!(
            code.contains(
                "export const AccountEvents_ClosedEvent = defineEvent(AccountEvents_ClosedSchema, {\n  topic: \"account.closed\",\n  type: \"acme.signup.v1.AccountEvents.Closed\",\n  source: \"\",\n});"
            ),
            "{code}"
        );
        assert!(code.contains(
            "import { UserSignedUpSchema, AccountEvents_ClosedSchema } from \"./signup_pb.js\";"
        ));
        assert!(code.contains(
            "import type { UserSignedUp, AccountEvents_Closed } from \"./signup_pb.js\";"
        ));
    }

    #[test]
    fn key_expressions_follow_the_field_kind() {
        let proto = (
            "k.proto",
            r#"syntax = "proto3";
package k;
import "herald/v1/options.proto";
message ByNumber { option (herald.v1.event) = { topic: "n" key_field: "account_id2" }; uint64 account_id2 = 1; }
message ByOptional { option (herald.v1.event) = { topic: "o" key_field: "ref" }; optional string ref = 1; }
message ByFlag { option (herald.v1.event) = { topic: "f" key_field: "constructor" }; optional bool constructor = 1; }
"#,
        );
        let code = &run_plugin(&[proto], "lang=typescript").unwrap()[0].content;
        assert!(
            code.contains("key: (event: ByNumber): string => String(event.accountId2),"),
            "{code}"
        );
        assert!(
            code.contains("key: (event: ByOptional): string => event.ref ?? \"\","),
            "{code}"
        );
        assert!(
            code.contains("key: (event: ByFlag): string => event.constructor$ === undefined ? \"\" : String(event.constructor$),"),
            "{code}"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let proto = (
            "q.proto",
            r#"syntax = "proto3";
import "herald/v1/options.proto";
message Interface { option (herald.v1.event) = { topic: "t" type: "a\"b\\c" source: "/s" }; string x = 1; }
"#,
        );
        let code = &run_plugin(&[proto], "lang=typescript").unwrap()[0].content;
        assert!(code.contains("type: \"a\\\"b\\\\c\","), "{code}");
    }

    #[test]
    fn reserved_type_names_are_escaped_like_protoc_gen_es() {
        let proto = (
            "r.proto",
            r#"syntax = "proto3";
import "herald/v1/options.proto";
message Object { option (herald.v1.event) = { topic: "t" }; string x = 1; }
"#,
        );
        let code = &run_plugin(&[proto], "lang=typescript").unwrap()[0].content;
        assert!(code.contains("defineEvent(ObjectSchema, {"), "{code}");
        assert!(code.contains("Producer<Object$>"), "{code}");
    }

    #[test]
    fn parameters_change_imports() {
        let files = run_plugin(
            &[SIGNUP],
            "lang=ts,import_extension=none,sdk_import=../sdk/index.js",
        )
        .unwrap();
        let code = &files[0].content;
        assert!(code.contains("from \"./signup_pb\";"), "{code}");
        assert!(
            code.contains("import { defineEvent } from \"../sdk/index.js\";"),
            "{code}"
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_the_known_ones() {
        let err = run_plugin(&[SIGNUP], "lang=typescript,target=js").unwrap_err();
        assert!(err.contains("unknown parameter `target`"), "{err}");
        assert!(err.contains("import_extension, sdk_import"), "{err}");
        let err = run_plugin(&[SIGNUP], "lang=typescript,import_extension=mjs").unwrap_err();
        assert!(err.contains("import_extension=`mjs`"), "{err}");
        let err = run_plugin(&[SIGNUP], "lang=typescript,sdk_import=").unwrap_err();
        assert!(err.contains("sdk_import"), "{err}");
    }

    #[test]
    fn clashing_generated_names_are_refused() {
        let proto = (
            "c.proto",
            r#"syntax = "proto3";
import "herald/v1/options.proto";
message Paid { option (herald.v1.event) = { topic: "t" }; string x = 1; }
message PaidEvent { string y = 1; }
"#,
        );
        let err = run_plugin(&[proto], "lang=typescript").unwrap_err();
        assert!(
            err.contains("`PaidEvent`") && err.contains("clashes"),
            "{err}"
        );
    }

    #[test]
    fn files_without_events_produce_nothing() {
        let plain = (
            "plain.proto",
            "syntax = \"proto3\";\nmessage P { string x = 1; }\n",
        );
        assert_eq!(run_plugin(&[plain], "lang=typescript").unwrap(), Vec::new());
    }
}

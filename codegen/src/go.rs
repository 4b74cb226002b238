//! Go backend: for every `.proto` file that declares events, a
//! `<file>_herald.pb.go` in the same Go package as protoc-gen-go's
//! `<file>.pb.go`, holding per event message
//!
//! - `var <Msg>Event = herald.EventType[*<Msg>]{...}`: topic, CloudEvents
//!   type and source, the full message name (the `data_schema`), a
//!   constructor for decoding and the key extractor from `key_field`;
//! - `New<Msg>Producer(c, opts...)` and `New<Msg>Consumer(c, subscription,
//!   opts...)`, typed shorthands for `herald.NewProducer` /
//!   `herald.NewConsumer`.
//!
//! The Go package comes from the file's `go_package` option (or an
//! `M<file>=<import path>` parameter, as with protoc-gen-go). Output paths
//! follow protoc-gen-go's `paths` parameter: `import` (default: the import
//! path's directories), `source_relative` (beside the `.proto` file), or
//! `module=<prefix>` (the import path with `<prefix>/` removed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::{Cardinality, FileDescriptor, Kind};

use crate::{EventModel, GENERATED_NOTICE, OutputFile, Request, check_params};

/// The import path of the Go SDK the generated code uses.
pub const SDK_IMPORT: &str = "github.com/herald-broker/herald/sdks/go";

/// Where output files go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Paths {
    /// `<import path>/<file base>` (protoc-gen-go's default).
    Import,
    /// Beside the `.proto` file.
    SourceRelative,
    /// `<import path minus module prefix>/<file base>`.
    Module(String),
}

/// Generates one `<file>_herald.pb.go` per file that declares events.
pub fn generate(request: &Request) -> Result<Vec<OutputFile>, String> {
    let (paths, overrides) = parse_params(request)?;
    let mut out = Vec::new();
    for file in &request.files {
        let events: Vec<&EventModel> = request.events_in(file).collect();
        if events.is_empty() {
            continue;
        }
        let (import_path, package) = go_package(file, &overrides)?;
        let stem = file.name().trim_end_matches(".proto");
        let base = stem.rsplit('/').next().unwrap_or(stem);
        let name = match &paths {
            Paths::SourceRelative => format!("{stem}_herald.pb.go"),
            Paths::Import => format!("{import_path}/{base}_herald.pb.go"),
            Paths::Module(prefix) => {
                let rest = import_path
                    .strip_prefix(prefix.as_str())
                    .and_then(|r| if r.is_empty() { Some(r) } else { r.strip_prefix('/') })
                    .ok_or_else(|| {
                        format!(
                            "protoc-gen-herald: {}: go_package import path {import_path:?} does not start with module={prefix:?}",
                            file.name()
                        )
                    })?;
                if rest.is_empty() {
                    format!("{base}_herald.pb.go")
                } else {
                    format!("{rest}/{base}_herald.pb.go")
                }
            }
        };
        out.push(OutputFile {
            name,
            content: render(file, &package, &events),
        });
    }
    Ok(out)
}

/// Splits the parameters into the `paths` mode and the `M` overrides.
fn parse_params(request: &Request) -> Result<(Paths, BTreeMap<String, String>), String> {
    let mut overrides = BTreeMap::new();
    let mut rest = BTreeMap::new();
    for (key, value) in &request.params {
        match key.strip_prefix('M') {
            Some(file) if !file.is_empty() => {
                overrides.insert(file.to_owned(), value.clone());
            }
            _ => {
                rest.insert(key.clone(), value.clone());
            }
        }
    }
    check_params(
        &Request {
            params: rest.clone(),
            files: Vec::new(),
            events: Vec::new(),
        },
        &["paths", "module", "M<file>"],
    )?;
    let paths = match (rest.get("paths").map(String::as_str), rest.get("module")) {
        (Some(_), Some(_)) => {
            return Err(
                "protoc-gen-herald: give either paths=... or module=..., not both".to_owned(),
            );
        }
        (None | Some("import"), None) => Paths::Import,
        (Some("source_relative"), None) => Paths::SourceRelative,
        (Some(other), None) => {
            return Err(format!(
                "protoc-gen-herald: unknown paths={other}: use paths=import (the default) or paths=source_relative, as with protoc-gen-go"
            ));
        }
        (None, Some(prefix)) if prefix.is_empty() || prefix == "true" => {
            return Err(
                "protoc-gen-herald: module= needs the Go module path to strip, e.g. module=github.com/acme/events"
                    .to_owned(),
            );
        }
        (None, Some(prefix)) => Paths::Module(prefix.trim_end_matches('/').to_owned()),
    };
    Ok((paths, overrides))
}

/// The Go import path and package name of `file`, from `M<file>=` or the
/// `go_package` option (`path;name` or `path`).
fn go_package(
    file: &FileDescriptor,
    overrides: &BTreeMap<String, String>,
) -> Result<(String, String), String> {
    let option = overrides.get(file.name()).cloned().or_else(|| {
        file.file_descriptor_proto()
            .options
            .as_ref()
            .and_then(|o| o.go_package.clone())
    });
    let Some(option) = option.filter(|o| !o.is_empty()) else {
        return Err(format!(
            "protoc-gen-herald: {} has no Go package: add `option go_package = \"example.com/your/module/pkg;pkg\";` to it, or pass M{}=example.com/your/module/pkg in --herald_opt (as for protoc-gen-go)",
            file.name(),
            file.name()
        ));
    };
    let (path, name) = match option.split_once(';') {
        Some((path, name)) => (path.to_owned(), name.to_owned()),
        None => {
            let base = option.rsplit('/').next().unwrap_or(&option);
            (option.clone(), clean_package_name(base))
        }
    };
    if path.is_empty() || name.is_empty() || !is_go_identifier(&name) {
        return Err(format!(
            "protoc-gen-herald: {}: go_package {option:?} is not `import/path` or `import/path;name` with a valid Go package name",
            file.name()
        ));
    }
    Ok((path, name))
}

/// protoc-gen-go's package name from an import path's last element.
fn clean_package_name(base: &str) -> String {
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn is_go_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// protoc-gen-go's identifier mangling (`strs.GoCamelCase`).
pub(crate) fn go_camel_case(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next_lower = i + 1 < b.len() && b[i + 1].is_ascii_lowercase();
        if c == b'.' && next_lower {
            // skipped
        } else if c == b'.' {
            out.push('_');
        } else if c == b'_' && (i == 0 || b[i - 1] == b'.') {
            out.push('X');
        } else if c == b'_' && next_lower {
            // skipped; the next letter is capitalised
        } else if c.is_ascii_digit() {
            out.push(c as char);
        } else {
            out.push(c.to_ascii_uppercase() as char);
            while i + 1 < b.len() && b[i + 1].is_ascii_lowercase() {
                i += 1;
                out.push(b[i] as char);
            }
        }
        i += 1;
    }
    out
}

/// The Go type name protoc-gen-go gives a message (`Outer_Inner` for nested).
fn go_message_name(event: &EventModel) -> String {
    let package = event.message.package_name();
    let full = event.message.full_name();
    let relative = if package.is_empty() {
        full
    } else {
        full.strip_prefix(package)
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or(full)
    };
    go_camel_case(relative)
}

/// A Go string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The body of the key function (the message is `m`) and whether it needs
/// `strconv`.
fn key_body(event: &EventModel) -> Option<(String, bool)> {
    let field = event.key_field.as_ref()?;
    let go_field = go_camel_case(field.name());
    let presence = field.supports_presence() && field.cardinality() != Cardinality::Required;
    let value = if presence {
        format!("*m.{go_field}")
    } else {
        format!("m.{go_field}")
    };
    let (expr, strconv) = match field.kind() {
        Kind::String => (value, false),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            (format!("strconv.FormatInt(int64({value}), 10)"), true)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            (format!("strconv.FormatInt({value}, 10)"), true)
        }
        Kind::Uint32 | Kind::Fixed32 => (format!("strconv.FormatUint(uint64({value}), 10)"), true),
        Kind::Uint64 | Kind::Fixed64 => (format!("strconv.FormatUint({value}, 10)"), true),
        Kind::Bool => (format!("strconv.FormatBool({value})"), true),
        // herald-build refuses every other kind before a backend runs.
        _ => return None,
    };
    let body = if presence {
        format!(
            "if m == nil || m.{go_field} == nil {{\n\t\t\treturn \"\"\n\t\t}}\n\t\treturn {expr}"
        )
    } else {
        format!("if m == nil {{\n\t\t\treturn \"\"\n\t\t}}\n\t\treturn {expr}")
    };
    Some((body, strconv))
}

fn render(file: &FileDescriptor, package: &str, events: &[&EventModel]) -> String {
    let keys: Vec<Option<(String, bool)>> = events.iter().map(|e| key_body(e)).collect();
    let strconv = keys.iter().flatten().any(|(_, s)| *s);
    let mut out = format!(
        "// {GENERATED_NOTICE}\n// source: {}\n\npackage {package}\n\n",
        file.name()
    );
    out.push_str("import (\n");
    if strconv {
        out.push_str("\t\"strconv\"\n\n");
    }
    let _ = writeln!(out, "\therald {}\n)", quote(SDK_IMPORT));
    for (event, key) in events.iter().zip(keys) {
        let go = go_message_name(event);
        let spec = &event.spec;
        let _ = write!(
            out,
            "\n// {go}Event binds {go} ({full}) to Herald: events go to topic {topic}\n\
             // with CloudEvents type {ty}.\n\
             var {go}Event = herald.EventType[*{go}]{{\n\
             \tTopic:  {qtopic},\n\
             \tType:   {qty},\n\
             \tSource: {qsource},\n\
             \tSchema: {qschema},\n\
             \tNew:    func() *{go} {{ return new({go}) }},\n",
            full = spec.full_name,
            topic = quote(&spec.topic),
            ty = quote(&spec.event_type),
            qtopic = quote(&spec.topic),
            qty = quote(&spec.event_type),
            qsource = quote(&spec.source),
            qschema = quote(&spec.full_name),
        );
        if let Some((body, _)) = key {
            let field = event
                .key_field
                .as_ref()
                .map(|f| f.name())
                .unwrap_or_default();
            let _ = write!(
                out,
                "\t// The ordering key: field {field}.\n\tKey: func(m *{go}) string {{\n\t\t{body}\n\t}},\n"
            );
        }
        out.push_str("}\n");
        let _ = write!(
            out,
            "\n// New{go}Producer publishes {go} events (see herald.NewProducer).\n\
             func New{go}Producer(c *herald.Client, opts ...herald.ProducerOption) *herald.Producer[*{go}] {{\n\
             \treturn herald.NewProducer(c, {go}Event, opts...)\n}}\n\
             \n// New{go}Consumer consumes {go} events through subscription (see herald.NewConsumer).\n\
             func New{go}Consumer(c *herald.Client, subscription string, opts ...herald.ConsumerOption) *herald.Consumer[*{go}] {{\n\
             \treturn herald.NewConsumer(c, {go}Event, subscription, opts...)\n}}\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{SIGNUP, run_plugin};

    #[test]
    fn emits_bindings_and_constructors_in_the_import_path() {
        let files = run_plugin(&[SIGNUP], "lang=go").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].name,
            "example.com/acme/signup/v1/signup_herald.pb.go"
        );
        let code = &files[0].content;
        assert!(code.starts_with(&format!(
            "// {GENERATED_NOTICE}\n// source: acme/signup/v1/signup.proto\n"
        )));
        assert!(code.contains("package signupv1\n"), "{code}");
        assert!(code.contains("var UserSignedUpEvent = herald.EventType[*UserSignedUp]{"));
        assert!(code.contains("\tTopic:  \"user.signup\",\n"));
        assert!(code.contains("\tType:   \"com.acme.user.signed_up\",\n"));
        assert!(code.contains("\tSource: \"/services/signup\",\n"));
        assert!(code.contains("\tSchema: \"acme.signup.v1.UserSignedUp\",\n"));
        assert!(code.contains("return m.UserId"), "{code}");
        assert!(code.contains("func NewUserSignedUpProducer(c *herald.Client, opts ...herald.ProducerOption) *herald.Producer[*UserSignedUp]"));
        assert!(code.contains("func NewUserSignedUpConsumer(c *herald.Client, subscription string, opts ...herald.ConsumerOption) *herald.Consumer[*UserSignedUp]"));
        // Nested messages get protoc-gen-go's names; no key, no Key func.
        assert!(
            code.contains(
                "var AccountEvents_ClosedEvent = herald.EventType[*AccountEvents_Closed]{"
            )
        );
        assert!(code.contains("\tSchema: \"acme.signup.v1.AccountEvents.Closed\",\n"));
        assert!(!code.contains("PlainMessage"));
        assert!(
            !code.contains("strconv"),
            "no integer key, no strconv import"
        );
    }

    #[test]
    fn source_relative_and_module_paths() {
        let files = run_plugin(&[SIGNUP], "lang=go,paths=source_relative").unwrap();
        assert_eq!(files[0].name, "acme/signup/v1/signup_herald.pb.go");
        let files = run_plugin(&[SIGNUP], "lang=go,module=example.com/acme").unwrap();
        assert_eq!(files[0].name, "signup/v1/signup_herald.pb.go");
        let err = run_plugin(&[SIGNUP], "lang=go,module=other.org/x").unwrap_err();
        assert!(
            err.contains("does not start with module=\"other.org/x\""),
            "{err}"
        );
        let err = run_plugin(&[SIGNUP], "lang=go,paths=flat").unwrap_err();
        assert!(err.contains("unknown paths=flat"), "{err}");
        let err = run_plugin(
            &[SIGNUP],
            "lang=go,paths=source_relative,module=example.com",
        )
        .unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn unknown_parameter_is_refused() {
        let err = run_plugin(&[SIGNUP], "lang=go,plugins=grpc").unwrap_err();
        assert!(err.contains("unknown parameter `plugins`"), "{err}");
        assert!(err.contains("paths"), "names the known ones: {err}");
    }

    const NO_GO_PACKAGE: (&str, &str) = (
        "acme/orders/v1/orders.proto",
        r#"syntax = "proto3";
package acme.orders.v1;
import "herald/v1/options.proto";
message OrderPlaced {
  option (herald.v1.event) = { topic: "orders" key_field: "shard" };
  optional int64 shard = 1;
  bool flag = 2;
}
message Flagged {
  option (herald.v1.event) = { topic: "flags" key_field: "flag" };
  bool flag = 1;
  uint32 n = 2;
}
"#,
    );

    #[test]
    fn missing_go_package_is_an_actionable_error() {
        let err = run_plugin(&[NO_GO_PACKAGE], "lang=go").unwrap_err();
        assert!(
            err.contains("acme/orders/v1/orders.proto has no Go package"),
            "{err}"
        );
        assert!(err.contains("option go_package"), "{err}");
        assert!(err.contains("Macme/orders/v1/orders.proto="), "{err}");
    }

    #[test]
    fn m_parameter_supplies_the_package_and_integer_keys_are_formatted() {
        let files = run_plugin(
            &[NO_GO_PACKAGE],
            "lang=go,paths=source_relative,Macme/orders/v1/orders.proto=example.com/orders-v1",
        )
        .unwrap();
        let code = &files[0].content;
        // The package name is cleaned from the last path element.
        assert!(code.contains("package orders_v1\n"), "{code}");
        assert!(code.contains("\t\"strconv\"\n"), "{code}");
        // proto3 optional: unset means keyless, not "0".
        assert!(code.contains("if m == nil || m.Shard == nil {"), "{code}");
        assert!(
            code.contains("return strconv.FormatInt(*m.Shard, 10)"),
            "{code}"
        );
        assert!(code.contains("return strconv.FormatBool(m.Flag)"), "{code}");
    }

    #[test]
    fn go_names_match_protoc_gen_go() {
        assert_eq!(go_camel_case("user_id"), "UserId");
        assert_eq!(go_camel_case("Outer.Inner"), "Outer_Inner");
        assert_eq!(go_camel_case("_private"), "XPrivate");
        assert_eq!(go_camel_case("http2_url"), "Http2Url");
        assert_eq!(go_camel_case("a_b_c"), "ABC");
        assert_eq!(
            go_camel_case("RouteAllocationRecorded"),
            "RouteAllocationRecorded"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}

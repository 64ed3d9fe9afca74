//! The flat `<xml>` codec of APIv2: `<xml><name><![CDATA[value]]></name>…</xml>`.
//!
//! The reader is deliberately strict: APIv2 messages are one level deep, so anything else —
//! a DOCTYPE (the XXE of CVE-2018-13439), an entity other than XML's five predefined ones, a
//! nested element, a repeated field, or input over [`MAX_XML_BYTES`] — is refused with its own
//! error instead of being interpreted.

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

use super::Params;

/// Largest message accepted. Notifications and replies are a few hundred bytes.
pub const MAX_XML_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML body is {size} bytes, over the {MAX_XML_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("XML body is not valid UTF-8")]
    NotUtf8,
    #[error("XML body is empty")]
    Empty,
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("entity reference &{0}; is not accepted")]
    Entity(String),
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("root element is not the expected one, found <{0}>")]
    WrongRoot(String),
    #[error("element <{0}> is nested inside a field; fields must be flat")]
    Nested(String),
    #[error("field <{0}> appears more than once")]
    Duplicate(String),
    #[error("text outside of a field")]
    StrayText,
    #[error("content after the closing </xml>")]
    TrailingContent,
    /// A control character (other than tab and line feed) in a value: WeChat never sends one,
    /// and a carriage return from `&#13;` would not survive a write/read round trip.
    #[error("field <{0}> contains a control character")]
    ControlCharacter(String),
    #[error("XML ends before </xml>")]
    Truncated,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Writes a message, every value in CDATA (so `<`, `&` need no escaping). A value containing
/// `]]>` is split across two CDATA sections so it still round-trips.
pub fn write(params: &Params) -> String {
    let mut out = String::with_capacity(64 + params.len() * 48);
    out.push_str("<xml>");
    for (name, value) in params {
        debug_assert!(
            is_field_name(name),
            "field name {name:?} is not a plain XML name"
        );
        out.push('<');
        out.push_str(name);
        out.push_str("><![CDATA[");
        out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(name);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

/// Field names WeChat uses: ASCII letters, digits and `_` (e.g. `coupon_fee_0`).
fn is_field_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

enum State {
    BeforeRoot,
    InRoot,
    InField { name: String, value: String },
    AfterRoot,
}

/// Reads a flat `<xml>` message into its fields. Values are the parsed text: CDATA and
/// escapes are transport syntax (the signature covers the parsed text).
pub fn read(input: &[u8]) -> Result<Params, XmlError> {
    read_root(input, "xml")
}

/// [`read`] for a flat message whose root element is `root` (a refund notification's
/// decrypted `req_info` is a `<root>`), with the same refusals.
pub fn read_root(input: &[u8], root: &str) -> Result<Params, XmlError> {
    if input.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge { size: input.len() });
    }
    let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    let mut reader = Reader::from_str(text);
    let mut params = Params::new();
    let mut state = State::BeforeRoot;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        state = match (state, event) {
            (_, Event::DocType(_)) => return Err(XmlError::Doctype),
            (_, Event::PI(_)) => return Err(XmlError::ProcessingInstruction),
            (state, Event::Comment(_)) => state,
            (State::BeforeRoot, Event::Decl(_)) => State::BeforeRoot,
            (_, Event::Decl(_)) => {
                return Err(XmlError::Malformed("misplaced XML declaration".into()));
            }

            (State::BeforeRoot, Event::Start(e)) => match e.name().as_ref() {
                name if name == root => State::InRoot,
                other => return Err(XmlError::WrongRoot(other.into())),
            },
            (State::BeforeRoot, Event::Empty(e)) => match e.name().as_ref() {
                name if name == root => State::AfterRoot,
                other => return Err(XmlError::WrongRoot(other.into())),
            },
            (State::InRoot, Event::Start(e)) => State::InField {
                name: new_field(&params, e.name().as_ref())?,
                value: String::new(),
            },
            (State::InRoot, Event::Empty(e)) => {
                let name = new_field(&params, e.name().as_ref())?;
                params.insert(name, String::new());
                State::InRoot
            }
            (State::InField { name, .. }, Event::Start(e) | Event::Empty(e)) => {
                let inner = e.name();
                return Err(XmlError::Nested(format!(
                    "{}> inside <{name}",
                    inner.as_ref()
                )));
            }
            (State::InField { name, mut value }, Event::Text(t)) => {
                value.push_str(&t.xml10_content());
                State::InField { name, value }
            }
            (State::InField { name, mut value }, Event::CData(c)) => {
                value.push_str(&c.xml10_content());
                State::InField { name, value }
            }
            (State::InField { name, mut value }, Event::GeneralRef(r)) => {
                value.push(resolve_reference(&r)?);
                State::InField { name, value }
            }
            (State::InField { name, value }, Event::End(_)) => {
                // quick-xml has already checked that the end tag matches.
                if value
                    .chars()
                    .any(|c| c.is_control() && c != '\t' && c != '\n')
                {
                    return Err(XmlError::ControlCharacter(name));
                }
                params.insert(name, value);
                State::InRoot
            }
            (State::InRoot, Event::End(_)) => State::AfterRoot,

            (state @ (State::BeforeRoot | State::InRoot | State::AfterRoot), Event::Text(t)) => {
                if !t.trim_ascii().is_empty() {
                    return Err(match state {
                        State::AfterRoot => XmlError::TrailingContent,
                        _ => XmlError::StrayText,
                    });
                }
                state
            }
            (State::AfterRoot, Event::Eof) => return Ok(params),
            (_, Event::Eof) => return Err(XmlError::Truncated),
            (State::AfterRoot, _) => return Err(XmlError::TrailingContent),
            (_, Event::GeneralRef(r)) => return Err(XmlError::Entity(r.to_string())),
            (_, Event::CData(_)) => return Err(XmlError::StrayText),
            (_, Event::End(_)) => return Err(XmlError::Malformed("unexpected end tag".into())),
        };
    }
}

fn new_field(params: &Params, name: &str) -> Result<String, XmlError> {
    if !is_field_name(name) {
        return Err(XmlError::Malformed(format!(
            "unexpected element name <{name}>"
        )));
    }
    if params.contains_key(name) {
        return Err(XmlError::Duplicate(name.into()));
    }
    Ok(name.into())
}

/// Character references and XML's five predefined entities; any other entity is refused
/// (there is no DTD that could define one).
fn resolve_reference(reference: &BytesRef<'_>) -> Result<char, XmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(XmlError::Malformed(format!(
                "bad character reference &{};",
                &**reference
            ))),
        };
    }
    match &**reference {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(XmlError::Entity(other.chars().take(64).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(fields: &[(&str, &str)]) -> Params {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writes_cdata() {
        let p = params(&[("return_code", "SUCCESS"), ("return_msg", "OK")]);
        assert_eq!(
            write(&p),
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
    }

    #[test]
    fn round_trips_awkward_text() {
        for value in [
            "腾讯充值中心-QQ会员充值",
            "a & b",
            "<tag>",
            "x]]>y",
            "]]>",
            "]]]]>",
            "",
            " padded ",
            "'\"",
            "line\nbreak",
        ] {
            let p = params(&[("body", value), ("total_fee", "1")]);
            assert_eq!(read(write(&p).as_bytes()), Ok(p), "value {value:?}");
        }
    }

    #[test]
    fn reads_wechat_style_documents() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n  <return_code><![CDATA[SUCCESS]]></return_code>\n  <!-- comment -->\n  <total_fee>1</total_fee>\n  <attach></attach>\n  <empty/>\n  <note>a &amp; b &lt; c &#x4E2D;&#25991;</note>\n</xml>\n";
        assert_eq!(
            read(doc.as_bytes()),
            Ok(params(&[
                ("return_code", "SUCCESS"),
                ("total_fee", "1"),
                ("attach", ""),
                ("empty", ""),
                ("note", "a & b < c 中文"),
            ]))
        );
        assert_eq!(read(b"<xml/>"), Ok(Params::new()));
        // Text and CDATA in one field are concatenated.
        assert_eq!(
            read(b"<xml><a>x<![CDATA[<y>]]>z</a></xml>"),
            Ok(params(&[("a", "x<y>z")]))
        );
    }

    #[test]
    fn refuses_doctype_and_xxe() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"#;
        assert_eq!(read(xxe.as_bytes()), Err(XmlError::Doctype));
        assert_eq!(read(b"<!DOCTYPE xml><xml></xml>"), Err(XmlError::Doctype));
    }

    #[test]
    fn refuses_entities() {
        assert_eq!(
            read(b"<xml><a>&xxe;</a></xml>"),
            Err(XmlError::Entity("xxe".into()))
        );
        assert_eq!(
            read(b"<xml>&lol;</xml>"),
            Err(XmlError::Entity("lol".into()))
        );
    }

    #[test]
    fn refuses_nesting() {
        assert_eq!(
            read(b"<xml><a><b>1</b></a></xml>"),
            Err(XmlError::Nested("b> inside <a".into()))
        );
        assert_eq!(
            read(b"<xml><a><b/></a></xml>"),
            Err(XmlError::Nested("b> inside <a".into()))
        );
    }

    #[test]
    fn refuses_duplicates() {
        assert_eq!(
            read(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>"),
            Err(XmlError::Duplicate("total_fee".into()))
        );
        assert_eq!(
            read(b"<xml><a/><a>1</a></xml>"),
            Err(XmlError::Duplicate("a".into()))
        );
    }

    #[test]
    fn refuses_oversize_input() {
        let big = format!("<xml><a>{}</a></xml>", "x".repeat(MAX_XML_BYTES));
        assert_eq!(
            read(big.as_bytes()),
            Err(XmlError::TooLarge { size: big.len() })
        );
        let fits = format!("<xml><a>{}</a></xml>", "x".repeat(MAX_XML_BYTES - 20));
        assert!(read(fits.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_control_characters_in_values() {
        // Found by fuzzing (xml_read): `&#13;` parsed to a lone CR, which CDATA cannot carry
        // back (XML normalizes it to LF), so the value did not round-trip.
        assert_eq!(
            read(b"<xml><a>x&#13;y</a></xml>"),
            Err(XmlError::ControlCharacter("a".into()))
        );
        assert_eq!(
            read(b"<xml><a>\0</a></xml>"),
            Err(XmlError::ControlCharacter("a".into()))
        );
        assert_eq!(
            read(b"<xml><b><![CDATA[\x0c]]></b></xml>"),
            Err(XmlError::ControlCharacter("b".into()))
        );
        // Line ends are normalized and tabs kept: those values round-trip.
        let p = read(b"<xml><a>x\r\ny\tz</a></xml>").unwrap();
        assert_eq!(p["a"], "x\ny\tz");
        assert_eq!(read(write(&p).as_bytes()), Ok(p));
    }

    #[test]
    fn refuses_other_shapes() {
        assert_eq!(read(b""), Err(XmlError::Empty));
        assert_eq!(read(b"  \n"), Err(XmlError::Empty));
        assert_eq!(read(b"\xff\xfe<xml/>"), Err(XmlError::NotUtf8));
        assert_eq!(
            read(b"<root><a>1</a></root>"),
            Err(XmlError::WrongRoot("root".into()))
        );
        assert_eq!(read(b"<xml><a>1</a>"), Err(XmlError::Truncated));
        assert_eq!(
            read(b"<xml><a>1</a></xml><xml/>"),
            Err(XmlError::TrailingContent)
        );
        assert_eq!(
            read(b"<xml><a>1</a></xml>junk"),
            Err(XmlError::TrailingContent)
        );
        assert_eq!(read(b"<xml>junk<a>1</a></xml>"), Err(XmlError::StrayText));
        assert_eq!(
            read(b"<xml><?php x?></xml>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert!(matches!(
            read(b"<xml><a>1</b></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            read(b"{\"json\": true}"),
            Err(XmlError::StrayText)
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn write_then_read_is_identity(
                p in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,15}", "\\PC{0,40}", 0..16)
            ) {
                prop_assert_eq!(read(write(&p).as_bytes()), Ok(p));
            }

            #[test]
            fn read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = read(&bytes);
            }

            #[test]
            fn read_never_panics_on_xmlish_text(s in "[<>/a-z!\\[\\]&;#x0-9 ?=\"]{0,80}") {
                let _ = read(s.as_bytes());
            }
        }
    }
}

//! `console` component: the merchant console, a single page (`static/`: HTML, one script, one
//! style sheet) embedded at build time and served under `/console/`. It holds no secret, reads
//! no variable and opens no store: the page itself asks for the admin token and calls the admin
//! API (`/api/admin/...`, same origin) with it.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style, nothing
//! from another origin, no framing), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
//! `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.

/// The policy of every answer: the page's own script, style and API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The headers every answer carries besides `Content-Type` (and `Cache-Control: no-store`,
/// which the plumbing adds to every answer).
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

const INDEX_HTML: &[u8] = include_bytes!("../static/index.html");
const CONSOLE_JS: &[u8] = include_bytes!("../static/console.js");
const CONSOLE_CSS: &[u8] = include_bytes!("../static/console.css");

/// What to answer a request: status, content type, extra headers and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub status: u16,
    pub content_type: &'static str,
    /// Besides [`SECURITY_HEADERS`] (`Location`, `Allow`).
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static [u8],
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `method` on `path` (the request target's path; a query is ignored). GET and
/// HEAD only (HEAD answers GET's status and headers; the caller sends no body).
pub fn asset(method: &str, path: &str) -> Asset {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let file = match path {
        "/console/" | "/console/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/console/console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS)),
        "/console/console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS)),
        _ => None,
    };
    let plain = |status, headers, body: &'static str| Asset {
        status,
        content_type: TEXT,
        headers,
        body: body.as_bytes(),
    };
    if method != "GET" && method != "HEAD" {
        return plain(405, vec![("allow", "GET, HEAD")], "method not allowed\n");
    }
    match file {
        Some((content_type, body)) => Asset {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
        },
        // The page's links are absolute, but `/console` itself is where people type.
        None if path == "/console" => plain(308, vec![("location", "/console/")], "/console/\n"),
        None => plain(404, Vec::new(), "not found\n"),
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    use spin_sdk::wasip3::http::types::Method;
    use wxpay::flows::Response;
    use wxpay::spin::{ErrorCode, HttpRequest, HttpResponse, into_http};

    wxpay::export_http_handler!(handle);

    async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
        let method = match req.get_method() {
            Method::Get => "GET",
            Method::Head => "HEAD",
            _ => "other",
        };
        let path = req.get_path_with_query().unwrap_or_default();
        let asset = super::asset(method, &path);
        let mut headers: Vec<(&'static str, String)> = super::SECURITY_HEADERS
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        headers.extend(asset.headers.iter().map(|(n, v)| (*n, (*v).to_owned())));
        // HEAD answers GET's headers, body included: the server sends no body for HEAD (and a
        // response without a body would go without its `Content-Type`).
        let body = asset.body.to_vec();
        into_http(
            Response {
                status: asset.status,
                content_type: asset.content_type,
                headers,
                body,
            },
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_three_files_with_their_types() {
        for (path, content_type, body) in [
            ("/console/", "text/html; charset=utf-8", INDEX_HTML),
            (
                "/console/index.html",
                "text/html; charset=utf-8",
                INDEX_HTML,
            ),
            (
                "/console/console.js",
                "text/javascript; charset=utf-8",
                CONSOLE_JS,
            ),
            (
                "/console/console.css",
                "text/css; charset=utf-8",
                CONSOLE_CSS,
            ),
            ("/console/?token=x", "text/html; charset=utf-8", INDEX_HTML),
        ] {
            for method in ["GET", "HEAD"] {
                let got = asset(method, path);
                assert_eq!(got.status, 200, "{method} {path}");
                assert_eq!(got.content_type, content_type, "{path}");
                assert_eq!(got.body, body, "{path}");
            }
        }
    }

    #[test]
    fn anything_else_is_404_405_or_the_redirect() {
        for path in [
            "/console/x",
            "/console/../Cargo.toml",
            "/console//",
            "/console/static/console.js",
        ] {
            assert_eq!(asset("GET", path).status, 404, "{path}");
        }
        let redirect = asset("GET", "/console");
        assert_eq!(redirect.status, 308);
        assert_eq!(redirect.headers, vec![("location", "/console/")]);
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "other"] {
            let got = asset(method, "/console/");
            assert_eq!(got.status, 405, "{method}");
            assert_eq!(got.headers, vec![("allow", "GET, HEAD")]);
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_other_origin() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        assert!(html.contains(r#"<script src="/console/console.js""#));
        assert!(html.contains(r#"<link rel="stylesheet" href="/console/console.css""#));
        for forbidden in [
            "<style",
            "style=",
            "onclick",
            "onload",
            "javascript:",
            "http://",
            "https://",
            "//cdn",
        ] {
            assert!(!html.contains(forbidden), "index.html has {forbidden:?}");
        }
        assert_eq!(
            html.matches("<script").count(),
            1,
            "one external script, nothing inline"
        );
        let js = std::str::from_utf8(CONSOLE_JS).unwrap();
        for forbidden in [
            "eval(",
            "new Function",
            "localStorage",
            "document.cookie",
            "console.log",
            "innerHTML",
        ] {
            assert!(!js.contains(forbidden), "console.js has {forbidden:?}");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}

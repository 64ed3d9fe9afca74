//! HTTP trigger routing and the request headers Spin adds.
//!
//! Imitates Spin 4's `spin-http` router: every `[[trigger.http]]` route is sanitised (made
//! absolute, one trailing `/` stripped), a trailing `/...` becomes a wildcard, `:name` segments
//! capture, and the best match is chosen by the same `routefinder` crate Spin uses (exact
//! segments beat `:params`, which beat wildcards; for wildcards the longest literal prefix wins).
//! A route declared twice goes to the component declared last, as in Spin. `{ private = true }`
//! routes are not reachable from outside. Spin's trailing-slash rules for `spin-path-info` are
//! reproduced (`/foo/...` matched by `/foo/` gives `/`).
//!
//! Simplified: the deprecated application `base`, `static_response` triggers and the
//! `/.well-known/spin/...` endpoints are not supported.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context as _, anyhow, bail};

/// What a route maps to.
#[derive(Clone, Debug)]
struct RouteHandler {
    component_id: String,
    /// The route as written in the manifest (`raw_route` in Spin).
    raw_route: String,
}

/// The application's router.
pub(crate) struct Router {
    inner: routefinder::Router<RouteHandler>,
}

/// The result of routing one path.
#[derive(Debug, Clone)]
pub(crate) struct RouteMatch {
    pub(crate) component_id: String,
    raw_route: String,
    named_wildcards: BTreeMap<String, String>,
    trailing_wildcard: String,
}

impl Router {
    /// Builds the router from `(component id, route)` pairs in manifest order; `None` routes
    /// are private (`route = { private = true }`).
    pub(crate) fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> anyhow::Result<Self> {
        // Later duplicates replace earlier ones, keeping the first position (IndexMap-like).
        let mut ordered: Vec<(String, RouteHandler)> = Vec::new();
        for (component_id, route) in routes {
            let Some(raw_route) = route else { continue };
            let based = sanitize(raw_route);
            let handler = RouteHandler {
                component_id: component_id.to_owned(),
                raw_route: raw_route.to_owned(),
            };
            match ordered.iter_mut().find(|(r, _)| r == raw_route) {
                Some(existing) => existing.1 = handler,
                None => ordered.push((raw_route.to_owned(), handler)),
            }
            // Validate eagerly so that errors name the component.
            parse_route(&based).map_err(|e| {
                anyhow!("Error parsing route {based} associated with component {component_id}: {e}")
            })?;
        }
        let mut inner = routefinder::Router::new();
        for (raw_route, handler) in ordered {
            let spec = parse_route(&sanitize(&raw_route)).map_err(|e| anyhow!("{e}"))?;
            inner.add(spec, handler).map_err(|e| anyhow!("{e}"))?;
        }
        Ok(Self { inner })
    }

    /// The best route for `path`, or `None` (Spin answers 404).
    pub(crate) fn route(&self, path: &str) -> Option<RouteMatch> {
        let best = self.inner.best_match(path)?;
        let handler = best.handler();
        let captures = best.captures();
        let named_wildcards = captures
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let trailing_wildcard = captures
            .wildcard()
            // Spin has traditionally captured trailing slashes; routefinder does not.
            .map(|s| match (s.is_empty(), path.ends_with('/')) {
                (true, false) => s.to_owned(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{s}"),
                (false, true) => format!("/{s}/"),
            })
            .unwrap_or_default();
        Some(RouteMatch {
            component_id: handler.component_id.clone(),
            raw_route: handler.raw_route.clone(),
            named_wildcards,
            trailing_wildcard,
        })
    }
}

fn parse_route(based_route: &str) -> Result<routefinder::RouteSpec, String> {
    if let Some(prefix) = based_route.strip_suffix("/...") {
        format!("{prefix}/*").as_str().try_into()
    } else {
        based_route.try_into()
    }
}

/// Spin's `sanitize_with_base("/", route)`: absolute, one trailing slash removed.
fn sanitize(route: &str) -> String {
    let route = if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    };
    route.strip_suffix('/').unwrap_or(&route).to_owned()
}

impl RouteMatch {
    /// The headers Spin 4 sets on a request routed to a component, with their exact values:
    /// `spin-full-url`, `spin-path-info`, `spin-matched-route`, `spin-base-path`,
    /// `spin-raw-component-route`, `spin-component-route`, `spin-client-addr` and one
    /// `spin-path-match-<name>` per `:name` segment.
    pub(crate) fn spin_headers(
        &self,
        scheme: &str,
        host: &str,
        path_and_query: &str,
        client_addr: SocketAddr,
    ) -> Vec<(String, String)> {
        let raw_or_prefix = self
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route)
            .to_owned();
        // Spin's base is always "/" now, so the matched route equals the sanitised raw route
        // (Spin reports `based_route`, which is the route with the base prepended).
        let mut headers = vec![
            ("spin-path-info".to_owned(), self.trailing_wildcard.clone()),
            (
                "spin-full-url".to_owned(),
                format!("{scheme}://{host}{path_and_query}"),
            ),
            ("spin-matched-route".to_owned(), sanitize(&self.raw_route)),
            ("spin-base-path".to_owned(), "/".to_owned()),
            (
                "spin-raw-component-route".to_owned(),
                self.raw_route.clone(),
            ),
            ("spin-component-route".to_owned(), raw_or_prefix),
            ("spin-client-addr".to_owned(), client_addr.to_string()),
        ];
        // Spin names these `SPIN_PATH_MATCH_<NAME>` and turns every header key into lowercase
        // with `_` as `-` (`prepare_header_key`): `:order_no` → `spin-path-match-order-no`.
        for (name, value) in &self.named_wildcards {
            headers.push((
                format!(
                    "spin-path-match-{}",
                    name.to_ascii_lowercase().replace('_', "-")
                ),
                value.clone(),
            ));
        }
        headers
    }
}

/// Checks a `route` value from the manifest: a string or `{ private = true }`.
pub(crate) fn route_value(component: &str, value: &toml::Value) -> anyhow::Result<Option<String>> {
    match value {
        toml::Value::String(route) => Ok(Some(route.clone())),
        toml::Value::Table(table) => {
            let private = table
                .get("private")
                .and_then(toml::Value::as_bool)
                .context("route table must be `{ private = true }`")?;
            if !private {
                bail!(
                    "route must be a string pattern or '{{ private = true }}': component '{component}' has {{ private = false }}"
                );
            }
            Ok(None)
        }
        other => bail!("route for component '{component}' must be a string, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(routes.iter().map(|(c, r)| (*c, Some(*r)))).unwrap()
    }

    #[test]
    fn exact_beats_param_beats_wildcard_and_longest_prefix_wins() {
        let r = router(&[
            ("all", "/..."),
            ("one", "/one/..."),
            ("onetwo", "/one/two/..."),
            ("exact", "/one/two"),
            ("param", "/one/:x"),
        ]);
        assert_eq!(r.route("/one/two").unwrap().component_id, "exact");
        assert_eq!(r.route("/one/zzz").unwrap().component_id, "param");
        assert_eq!(r.route("/one/two/three").unwrap().component_id, "onetwo");
        assert_eq!(r.route("/one/zzz/three").unwrap().component_id, "one");
        assert_eq!(r.route("/elsewhere").unwrap().component_id, "all");
        assert_eq!(r.route("/").unwrap().component_id, "all");
    }

    #[test]
    fn no_match_without_catch_all() {
        let r = router(&[("a", "/a"), ("b", "/b/...")]);
        assert!(r.route("/c").is_none());
        assert!(r.route("/a/x").is_none());
        assert_eq!(r.route("/b").unwrap().component_id, "b");
    }

    #[test]
    fn trailing_wildcard_respects_trailing_slash() {
        let r = router(&[("c", "/test/...")]);
        assert_eq!(r.route("/test").unwrap().trailing_wildcard, "");
        assert_eq!(r.route("/test/").unwrap().trailing_wildcard, "/");
        assert_eq!(r.route("/test/hello").unwrap().trailing_wildcard, "/hello");
        assert_eq!(
            r.route("/test/hello/").unwrap().trailing_wildcard,
            "/hello/"
        );
    }

    #[test]
    fn last_duplicate_wins_and_private_routes_are_unreachable() {
        let r = Router::build([
            ("first", Some("/foo")),
            ("second", Some("/foo")),
            ("hidden", None),
        ])
        .unwrap();
        assert_eq!(r.route("/foo").unwrap().component_id, "second");
    }

    #[test]
    fn headers_match_spin_for_named_and_trailing_wildcards() {
        let r = router(&[("c", "/foo/:userid/...")]);
        let m = r.route("/foo/42/bar").unwrap();
        let headers: BTreeMap<_, _> = m
            .spin_headers(
                "https",
                "fermyon.dev",
                "/foo/42/bar?key1=value1",
                "127.0.0.1:8777".parse().unwrap(),
            )
            .into_iter()
            .collect();
        assert_eq!(
            headers["spin-full-url"],
            "https://fermyon.dev/foo/42/bar?key1=value1"
        );
        assert_eq!(headers["spin-path-info"], "/bar");
        assert_eq!(headers["spin-matched-route"], "/foo/:userid/...");
        assert_eq!(headers["spin-base-path"], "/");
        assert_eq!(headers["spin-raw-component-route"], "/foo/:userid/...");
        assert_eq!(headers["spin-component-route"], "/foo/:userid");
        assert_eq!(headers["spin-client-addr"], "127.0.0.1:8777");
        assert_eq!(headers["spin-path-match-userid"], "42");
    }
}

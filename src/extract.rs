//! Where tokens come from: request headers (with a prefix such as `Bearer `), query
//! parameters and cookies, as Envoy's jwt_authn extractor reads them. Also which incoming
//! headers belong to the filter and must be stripped before anything else.

use std::borrow::Cow;

use crate::bytes::{contains_byte, same_bytes, same_header_name};
use crate::claims::is_claim_header_family;
use crate::config::{FilterConfig, TokenLocation};
use crate::headermap::{text, Header};

/// A token as presented, and where; borrowed from the request while it is being decided.
/// Kept as the request's bytes: a cached token is matched by them, so a repeated token is
/// never read as text again (checking 700 bytes for UTF-8 was a tenth of a cached request's
/// work in the VM). A token that has to be decoded becomes text then ([`FoundToken::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken<'a> {
    /// Index into [`FilterConfig::locations`].
    pub location: usize,
    pub token: Cow<'a, [u8]>,
}

impl FoundToken<'_> {
    /// The same token, owning its bytes (for a request that has to wait).
    pub fn into_owned(self) -> FoundToken<'static> {
        FoundToken { location: self.location, token: Cow::Owned(self.token.into_owned()) }
    }

    /// The token as text, for decoding: lossy where it is not UTF-8 (the replacement
    /// characters then fail to decode: 401, never a panic).
    pub fn text(&self) -> Cow<'_, str> {
        text(&self.token)
    }
}

/// The tokens a request presents, in location order (within a location, in the order they
/// were presented). Nearly every request presents one, kept in place: a cached request
/// allocates nothing else in the VM.
#[derive(Debug, Clone)]
pub enum FoundTokens<'a> {
    One([FoundToken<'a>; 1]),
    /// None (an empty Vec does not allocate), or more than one.
    Other(Vec<FoundToken<'a>>),
}

impl Default for FoundTokens<'_> {
    fn default() -> Self {
        FoundTokens::Other(Vec::new())
    }
}

impl<'a> FoundTokens<'a> {
    /// Adds the token in `raw` (trimmed as `str::trim` would; nothing if that leaves nothing).
    fn push(&mut self, location: usize, raw: &'a [u8]) {
        let token = trim_whitespace(raw);
        if !token.is_empty() {
            self.insert(FoundToken { location, token: Cow::Borrowed(token) });
        }
    }

    /// Inserts after every token of the same or an earlier location.
    fn insert(&mut self, token: FoundToken<'a>) {
        if let FoundTokens::Other(tokens) = self {
            if tokens.is_empty() {
                *self = FoundTokens::One([token]); // the request's first token: nearly always its only one
                return;
            }
        }
        *self = match std::mem::take(self) {
            FoundTokens::Other(tokens) if tokens.is_empty() => FoundTokens::One([token]),
            FoundTokens::One([first]) if first.location <= token.location => FoundTokens::Other(vec![first, token]),
            FoundTokens::One([first]) => FoundTokens::Other(vec![token, first]),
            FoundTokens::Other(mut tokens) => {
                let at = tokens.iter().rposition(|t| t.location <= token.location).map_or(0, |last| last + 1);
                tokens.insert(at, token);
                FoundTokens::Other(tokens)
            }
        };
    }

    pub fn into_vec(self) -> Vec<FoundToken<'a>> {
        match self {
            FoundTokens::One(one) => one.into(),
            FoundTokens::Other(tokens) => tokens,
        }
    }
}

impl<'a> std::ops::Deref for FoundTokens<'a> {
    type Target = [FoundToken<'a>];

    fn deref(&self) -> &[FoundToken<'a>] {
        match self {
            FoundTokens::One(one) => one,
            FoundTokens::Other(tokens) => tokens,
        }
    }
}

/// What the request path needs from a request's headers, taken in one walk over them. The
/// code a request runs in the VM is fetched from memory about as often as it runs (Envoy's
/// own work between two requests pushes it out of the CPU's caches), so one loop that asks
/// each header every question is cheaper than a loop per question.
#[derive(Debug, Default)]
pub struct HeaderScan<'a> {
    /// Client-sent headers the filter owns ([`is_owned_header`]), each name once.
    pub owned: Vec<&'a [u8]>,
    /// `:path` as sent; empty if there is none.
    pub path: &'a [u8],
    /// The tokens in header and cookie locations; [`add_query_tokens`] adds the query's.
    pub tokens: FoundTokens<'a>,
}

/// One walk over a request's headers (the host's buffer, [`crate::headermap::Pairs`]).
pub fn scan_headers<'a>(config: &FilterConfig, headers: impl Iterator<Item = Header<'a>>) -> HeaderScan<'a> {
    let mut scan = HeaderScan::default();
    let mut path = None;
    for (name, value) in headers {
        // Most of a request's headers concern the filter in no way: their length says so.
        if !config.scanned_names.may_concern(name) {
            continue;
        }
        if path.is_none() && same_bytes(name, b":path") {
            path = Some(value);
        }
        if is_owned_header(config, name) && !scan.owned.contains(&name) {
            scan.owned.push(name);
        }
        add_header_tokens(&config.locations, name, value, &mut scan.tokens);
    }
    scan.path = path.unwrap_or_default();
    scan
}

/// Test-only: the tokens the request path's walk ([`scan_headers`], then [`add_query_tokens`])
/// finds in `headers` and `path` under these locations alone (no owned headers), in location
/// order. Header names and values may be bytes or text.
#[cfg(test)]
pub(crate) fn find_tokens<'a, N: AsRef<[u8]>, V: AsRef<[u8]>>(
    locations: &[TokenLocation],
    headers: &'a [(N, V)],
    path: &'a str,
) -> FoundTokens<'a> {
    let config = FilterConfig {
        rules: Vec::new(),
        claim_headers: Vec::new(),
        conditions: Vec::new(),
        require_token: false,
        max_token_bytes: crate::config::DEFAULT_MAX_TOKEN_BYTES,
        token_cache_size: 0,
        locations: locations.to_vec(),
        owned_headers: Vec::new(),
        scanned_names: crate::config::ScannedNames::new(locations, &[]),
    };
    let with_path = headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).chain([(&b":path"[..], path.as_bytes())]);
    let mut scan = scan_headers(&config, with_path);
    add_query_tokens(locations, scan.path, &mut scan.tokens);
    scan.tokens
}

/// The tokens one header holds for the header and cookie locations.
fn add_header_tokens<'a>(locations: &[TokenLocation], name: &[u8], value: &'a [u8], found: &mut FoundTokens<'a>) {
    for (index, location) in locations.iter().enumerate() {
        match location {
            TokenLocation::Header { name: wanted, prefix } if name_is(name, wanted.as_bytes()) => {
                if let Some(token) = after_prefix(value, prefix) {
                    found.push(index, token);
                }
            }
            TokenLocation::Cookie(cookie) if name_is(name, b"cookie") => {
                each_cookie(value, cookie, &mut |token| found.push(index, token));
            }
            _ => {}
        }
    }
}

/// Adds the tokens in the query of `path` (the request's `:path`, bytes as sent) for the
/// query parameter locations. Names and values are percent-decoded first (RFC 6750 §2.3: the
/// query is `application/x-www-form-urlencoded`; jwt_authn decodes it too), so
/// `access%5Ftoken=...` presents a token like `access_token=...` does.
pub fn add_query_tokens<'a>(locations: &[TokenLocation], path: &'a [u8], found: &mut FoundTokens<'a>) {
    if !contains_byte(path, b'?') || !locations.iter().any(|l| matches!(l, TokenLocation::Param(_))) {
        return;
    }
    for (index, location) in locations.iter().enumerate() {
        let TokenLocation::Param(name) = location else { continue };
        for (key, value) in query_pairs(path) {
            if percent_decoded(key).as_ref() != name.as_bytes() {
                continue;
            }
            match percent_decoded(value) {
                Cow::Borrowed(value) => found.push(index, value),
                Cow::Owned(value) => {
                    let token = trim_whitespace(&value);
                    if !token.is_empty() {
                        found.insert(FoundToken { location: index, token: Cow::Owned(token.to_vec()) });
                    }
                }
            }
        }
    }
}

/// `%XX` sequences decoded; borrowed when there are none. A `%` not followed by two hex
/// digits stays as it is (as Envoy's decoder leaves it). `+` is not turned into a space: a
/// token never holds either, so a `+` fails to decode as one whichever way it is read.
pub fn percent_decoded(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !contains_byte(bytes, b'%') {
        return Cow::Borrowed(bytes);
    }
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16)).and_then(|d| u8::try_from(d).ok());
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match (byte, hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) {
            (b'%', Some(high), Some(low)) => {
                decoded.push(high << 4 | low);
                at += 3;
            }
            _ => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    Cow::Owned(decoded)
}

/// `str::trim` on bytes: the same result for text, without reading the token in between.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    // Visible ASCII at both ends, as every token is sent: nothing to trim.
    let visible = |end: Option<&u8>| end.is_some_and(|b| (0x21..0x7f).contains(b));
    if visible(bytes.first()) && visible(bytes.last()) {
        return bytes;
    }
    // `char::is_whitespace` on ASCII (which `u8::is_ascii_whitespace` is not: it skips VT).
    let trimmed = trim_bytes(bytes, |b| matches!(b, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' '));
    // A non-ASCII end may be Unicode whitespace: trim that as text. (Not UTF-8: the token
    // cannot decode whatever its ends are.)
    if trimmed.first().is_some_and(|b| !b.is_ascii()) || trimmed.last().is_some_and(|b| !b.is_ascii()) {
        if let Ok(text) = std::str::from_utf8(trimmed) {
            return text.trim().as_bytes();
        }
    }
    trimmed
}

/// `bytes` without the leading and trailing bytes that `trimmed` picks.
fn trim_bytes(bytes: &[u8], trimmed: impl Fn(u8) -> bool) -> &[u8] {
    let start = bytes.iter().position(|&b| !trimmed(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !trimmed(b)).map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Calls `found` with the value of each cookie called `name` in a `Cookie` header value.
fn each_cookie<'v>(value: &'v [u8], name: &str, found: &mut impl FnMut(&'v [u8])) {
    for pair in value.split(|b| *b == b';') {
        let pair = trim_whitespace(pair);
        let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
        let (key, value) = (pair.get(..eq).unwrap_or_default(), pair.get(eq + 1..).unwrap_or_default());
        if key == name.as_bytes() {
            found(trim_bytes(value, |b| b == b'"'));
        }
    }
}

/// What follows the first occurrence of `prefix` in a header value. Like Envoy's extractor,
/// the prefix is looked for anywhere (`Basic x, Bearer t` presents `t`), so a token is never
/// overlooked where jwt_authn would see (and judge) one. Unlike it, the match ignores ASCII
/// case: auth schemes are case-insensitive (RFC 9110 §11.1), so `bearer t` is judged too.
fn after_prefix<'a>(value: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let prefix = prefix.as_bytes();
    // As configured, at the start (nearly every request): the first occurrence, found at
    // once. An empty prefix always is (the search below needs a non-empty one).
    if value.get(..prefix.len()).is_some_and(|head| same_bytes(head, prefix)) {
        return value.get(prefix.len()..);
    }
    let at = value.windows(prefix.len()).position(|window| window.eq_ignore_ascii_case(prefix))?;
    value.get(at + prefix.len()..)
}

/// The `key=value` pairs of the query part of a request path, as sent (not decoded).
pub fn query_pairs(path: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let query = path.iter().position(|&b| b == b'?').and_then(|at| path.get(at + 1..)).unwrap_or_default();
    let query = query.iter().position(|&b| b == b'#').and_then(|end| query.get(..end)).unwrap_or(query);
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|pair| {
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair.get(..eq).unwrap_or_default(), pair.get(eq + 1..).unwrap_or_default()),
            None => (pair, &[][..]),
        }
    })
}

/// The path with every parameter whose (percent-decoded) name is `name` removed; the others
/// kept as they were sent.
pub fn without_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !p.is_empty() && percent_decoded(key.as_bytes()).as_ref() != name.as_bytes()
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// `true` for an incoming header the filter owns: the whole `x-jwt-claim` family and every
/// header a rule writes, in any case and with `_` for `-` ([`same_header_name`]). Such headers
/// are removed from every request before anything else, so only the filter can ever set them.
pub fn is_owned_header(config: &FilterConfig, name: &[u8]) -> bool {
    is_claim_header_family(name) || config.owned_headers.iter().any(|h| same_header_name(name, h.as_bytes()))
}

/// `name` is `lowercase` (a lowercased name) in any ASCII case. Envoy hands header names
/// over lowercased, so the exact comparison, a fraction of the cost, nearly always answers.
fn name_is(name: &[u8], lowercase: &[u8]) -> bool {
    name.len() == lowercase.len() && (same_bytes(name, lowercase) || name.eq_ignore_ascii_case(lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn defaults() -> Vec<TokenLocation> {
        vec![
            TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            TokenLocation::Param("access_token".into()),
        ]
    }

    fn tokens(found: FoundTokens) -> Vec<(usize, String)> {
        found.iter().map(|f| (f.location, f.text().into_owned())).collect()
    }

    #[test]
    fn reads_the_host_s_bytes_and_only_token_values_as_text() {
        let h: Vec<(&[u8], &[u8])> =
            vec![(b"x-other", b"\xff\xfe"), (b"Authorization", b"Bearer a\xffb"), (b"cookie", b"session=\"c.c.c\"")];
        let locations = vec![
            TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            TokenLocation::Cookie("session".into()),
        ];
        let found = find_tokens(&locations, &h, "/");
        assert_eq!(tokens(found.clone()), vec![(0, "a\u{fffd}b".to_string()), (1, "c.c.c".to_string())]);
        assert!(found.iter().all(|f| matches!(f.token, Cow::Borrowed(_))), "tokens stay borrowed");
    }

    #[test]
    fn tokens_are_trimmed_as_str_trim_would() {
        for raw in [
            "a.b.c",
            " \t a.b.c \r\n",
            "\u{a0}a.b.c\u{3000}",
            "\x0ba.b.c\x0c",
            "\u{85}a.b\u{a0}c ",
            "é.b.c",
            "",
            " \u{a0} ",
        ] {
            assert_eq!(trim_whitespace(raw.as_bytes()), raw.trim().as_bytes(), "{raw:?}");
        }
        let h = headers(&[("authorization", "Bearer \u{a0}\u{a0}"), ("cookie", "a=1;\u{a0}session=\"c.c.c\" ")]);
        let locations = vec![
            TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            TokenLocation::Cookie("session".into()),
        ];
        assert_eq!(tokens(find_tokens(&locations, &h, "/")), vec![(1, "c.c.c".into())], "whitespace only is no token");
    }

    #[test]
    fn bearer_header_any_case() {
        let h = headers(&[("authorization", "bearer a.b.c")]);
        assert_eq!(tokens(find_tokens(&defaults(), &h, "/")), vec![(0, "a.b.c".to_string())]);
    }

    #[test]
    fn the_prefix_is_found_anywhere_in_the_value() {
        for value in ["Basic dXNlcjpwYXNz Bearer a.b.c", "XBearer a.b.c", "BEARER a.b.c"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(tokens(find_tokens(&defaults(), &h, "/")), vec![(0, "a.b.c".to_string())], "{value}");
        }
    }

    #[test]
    fn wrong_scheme_or_empty_token_is_no_token() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "a.b.c", "é"] {
            let h = headers(&[("authorization", value)]);
            assert!(find_tokens(&defaults(), &h, "/").is_empty(), "{value}");
        }
    }

    #[test]
    fn query_parameter_and_header_both_found_in_location_order() {
        let h = headers(&[("authorization", "Bearer h.h.h")]);
        let found = find_tokens(&defaults(), &h, "/headers?x=1&access_token=q.q.q#frag");
        assert_eq!(tokens(found), vec![(0, "h.h.h".into()), (1, "q.q.q".into())]);
    }

    #[test]
    fn custom_header_without_prefix_and_cookie() {
        let locations = vec![
            TokenLocation::Header { name: "x-token".into(), prefix: String::new() },
            TokenLocation::Cookie("session".into()),
        ];
        let h = headers(&[("X-Token", "t.t.t"), ("cookie", "a=1; session=c.c.c; b=2")]);
        assert_eq!(tokens(find_tokens(&locations, &h, "/")), vec![(0, "t.t.t".into()), (1, "c.c.c".into())]);
    }

    #[test]
    fn repeated_headers_yield_each_token() {
        let h = headers(&[("authorization", "Bearer one"), ("authorization", "Bearer two")]);
        assert_eq!(tokens(find_tokens(&defaults(), &h, "/")), vec![(0, "one".into()), (0, "two".into())]);
        let h =
            headers(&[("authorization", "Bearer one"), ("authorization", "Bearer two"), ("authorization", "Bearer 3")]);
        let found = find_tokens(&defaults(), &h, "/?access_token=four");
        assert!(matches!(found, FoundTokens::Other(_)));
        assert_eq!(tokens(found), vec![(0, "one".into()), (0, "two".into()), (0, "3".into()), (1, "four".into())]);
        let found = find_tokens(&defaults(), &h[..1], "/");
        assert!(matches!(found, FoundTokens::One(_)), "one token is kept in place");
        assert_eq!(found.into_vec().len(), 1);
    }

    #[test]
    fn one_walk_finds_owned_names_the_path_and_tokens_in_location_order() {
        let config = FilterConfig::parse(
            br#"{"jwtRules":[{"issuer":"i","jwks":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
                "fromHeaders":[{"name":"authorization","prefix":"Bearer "}],
                "fromCookies":["session"]}]}"#,
        )
        .unwrap();
        let [Some(auth), Some(cookie)] =
            [TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() }, TokenLocation::Cookie("session".into())]
                .map(|l| config.locations.iter().position(|c| *c == l))
        else {
            panic!("locations {:?}", config.locations)
        };
        // The cookie before the header, the claim family twice under one name, two :path.
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"cookie", b"session=c.c.c"),
            (b":path", b"/first"),
            (b"x-jwt-claim.groups", b"forged"),
            (b"authorization", b"Bearer a.a.a"),
            (b"X-Jwt-Claim-Role", b"forged"),
            (b"x-jwt-claim.groups", b"again"),
            (b":path", b"/second"),
        ];
        let scan = scan_headers(&config, h.iter().map(|(n, v)| (*n, *v)));
        assert_eq!(scan.owned, vec![&b"x-jwt-claim.groups"[..], b"X-Jwt-Claim-Role"]);
        assert_eq!(scan.path, b"/first");
        let mut expected = vec![(auth, "a.a.a".to_string()), (cookie, "c.c.c".to_string())];
        expected.sort();
        assert_eq!(tokens(scan.tokens), expected, "location order, not header order");
        let empty = scan_headers(&config, std::iter::empty());
        assert!(empty.owned.is_empty() && empty.path.is_empty() && empty.tokens.is_empty());
    }

    #[test]
    fn a_token_is_inserted_after_those_of_its_location_and_earlier_ones() {
        let mut found = FoundTokens::default();
        for (location, token) in [(1, "b1"), (0, "a1"), (2, "c1"), (1, "b2"), (0, "a2")] {
            found.push(location, token.as_bytes());
        }
        let expected = [(0, "a1"), (0, "a2"), (1, "b1"), (1, "b2"), (2, "c1")].map(|(l, t)| (l, t.to_string()));
        assert_eq!(tokens(found), expected.to_vec());
        let mut two = FoundTokens::default();
        two.push(1, b"later location, first presented");
        two.push(0, b"earlier location");
        assert_eq!(tokens(two), vec![(0, "earlier location".into()), (1, "later location, first presented".into())]);
    }

    #[test]
    fn query_tokens_only_from_a_query_and_as_bytes_from_a_path_that_is_not_utf8() {
        let mut found = FoundTokens::default();
        add_query_tokens(&defaults(), b"/headers", &mut found);
        add_query_tokens(&defaults(), b"/headers#access_token=x", &mut found);
        assert!(found.is_empty());
        add_query_tokens(&defaults(), b"/h?x=\xff&access_token=a.b\xfe", &mut found);
        assert!(matches!(found[0].token, Cow::Borrowed(b"a.b\xfe")));
        assert_eq!(found[0].text(), "a.b\u{fffd}", "decoded as text, lossy: it then fails to decode");
        let mut borrowed = FoundTokens::default();
        add_query_tokens(&defaults(), b"/h?access_token=q.q.q", &mut borrowed);
        assert!(matches!(borrowed[0].token, Cow::Borrowed(b"q.q.q")));
    }

    #[test]
    fn query_names_and_values_are_percent_decoded() {
        let found = |path: &str| {
            let mut found = FoundTokens::default();
            add_query_tokens(&defaults(), path.as_bytes(), &mut found);
            tokens(found)
        };
        let token = |t: &str| vec![(1, t.to_string())];
        assert_eq!(found("/h?access%5Ftoken=garbage"), token("garbage"));
        assert_eq!(found("/h?access%5ftoken=a.b.c"), token("a.b.c"));
        assert_eq!(found("/h?%61ccess_token=a%2Eb%2ec"), token("a.b.c"));
        assert_eq!(found("/h?access_token=a.b.c%20"), token("a.b.c"), "trimmed after decoding");
        assert_eq!(found("/h?access%5Xtoken=a.b.c&access_token%=x"), vec![], "not hex: kept as sent");
        assert_eq!(percent_decoded(b"100%"), Cow::Borrowed(&b"100%"[..]));
        assert_eq!(percent_decoded(b"%zz%4"), Cow::<[u8]>::Owned(b"%zz%4".to_vec()));
        assert_eq!(percent_decoded(b"%e2%82%ac"), Cow::<[u8]>::Owned("\u{20ac}".as_bytes().to_vec()));
    }

    #[test]
    fn removing_a_parameter_keeps_the_others() {
        assert_eq!(without_param("/h?access_token=x", "access_token"), "/h");
        assert_eq!(without_param("/h?a=1&access_token=x&b=2", "access_token"), "/h?a=1&b=2");
        assert_eq!(without_param("/h?access_token_x=1", "access_token"), "/h?access_token_x=1");
        assert_eq!(without_param("/h", "access_token"), "/h");
        // Every spelling of the name goes; the rest stays as sent.
        assert_eq!(without_param("/h?access%5Ftoken=x&b=%20x&%61ccess_token=y", "access_token"), "/h?b=%20x");
    }

    #[test]
    fn the_walk_passes_over_only_names_nothing_could_match() {
        let long_owned = format!("x-{}", "o".repeat(70));
        let config = FilterConfig::parse(
            format!(
                r#"{{"jwtRules":[{{"issuer":"i","jwks":"{{\"keys\":[{{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}}]}}",
                "fromHeaders":[{{"name":"X-Token"}}],"fromCookies":["session"],
                "outputClaimToHeaders":[{{"header":"{long_owned}","claim":"sub"}},{{"header":"x-sub","claim":"sub"}}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let names = config.scanned_names;
        let concerned = [":path", "x-token", "X-TOKEN", "cookie", "Cookie", "x-sub", "X-Sub", &long_owned];
        let family = ["x-jwt-claim.groups", "X-JWT-CLAIM-a-name-longer-than-sixty-three-bytes-of-the-family-of-claims"];
        for name in concerned.iter().chain(&family) {
            assert!(names.may_concern(name.as_bytes()), "{name}");
        }
        for name in ["host", "accept-encoding", "user-agent", ":authority", "x-request-id", "authorization", "x-forwarded-proto"] {
            assert!(!names.may_concern(name.as_bytes()), "{name}");
        }
        // Passed over or not, the walk finds every token, in any case of the names.
        let h: Vec<(&[u8], &[u8])> =
            vec![(b"accept", b"*/*"), (b"X-Token", b"a.a.a"), (b"COOKIE", b"session=c.c.c"), (b"X-Sub", b"forged")];
        let scan = scan_headers(&config, h.iter().map(|(n, v)| (*n, *v)));
        assert_eq!(tokens(scan.tokens), vec![(0, "a.a.a".into()), (1, "c.c.c".into())]);
        assert_eq!(scan.owned, vec![&b"X-Sub"[..]]);
    }

    #[test]
    fn owned_headers_cover_the_claim_family_and_rule_outputs() {
        let config = FilterConfig::parse(
            br#"{"jwtRules":[{"issuer":"i","jwks":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
                "outputPayloadToHeader":"x-jwt-payload",
                "outputClaimToHeaders":[{"header":"x-sub","claim":"sub"}]}]}"#,
        )
        .unwrap();
        let owned = [
            "x-jwt-claim.groups",
            "X-JWT-Claim.Groups",
            "x-jwt-claim-groups",
            "X-Jwt-Payload",
            "x-sub",
            // Underscore spellings: upstream stacks that fold `_` into `-` would read these as ours.
            "x_jwt_claim_groups",
            "x_jwt_claim.groups",
            "X_JWT_CLAIM_SCOPE",
            "x_jwt_payload",
            "X_Jwt-Payload",
            "x_sub",
        ];
        for name in owned {
            assert!(is_owned_header(&config, name.as_bytes()), "{name}");
        }
        for name in ["authorization", "x-jwt", "host", "x_custom", "x-sub2", "x.sub"] {
            assert!(!is_owned_header(&config, name.as_bytes()), "{name}");
        }
    }
}

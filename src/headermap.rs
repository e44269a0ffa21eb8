//! The proxy-wasm wire form of a header map, read in place.
//!
//! `proxy_get_header_map_pairs` hands the VM one buffer: the pair count (u32 LE), then each
//! pair's name and value lengths (u32 LE each), then each name and value, every one followed
//! by a NUL. The SDK's reader copies every name and value into its own allocation; here the
//! request path borrows them from the buffer instead, and turns into text only the values it
//! reads: on a cached token, those copies (and a byte-at-a-time lossy UTF-8 pass over every
//! value) were a third of the filter's own work inside the VM.

use std::borrow::Cow;

/// One header as the host gives it: name and value, as bytes.
pub type Header<'a> = (&'a [u8], &'a [u8]);

/// The pairs of a serialized header map, read in place: a cursor over the buffer, cheap to
/// copy. Neither a list nor a copy is made: on a cached token the list's allocation was a
/// sixth of the filter's own work in the VM. A pair that does not fit the buffer ends the walk
/// ([`Pairs::is_complete`] then says so).
#[derive(Clone, Debug, Default)]
pub struct Pairs<'a> {
    /// Name and value lengths (u32 LE each) of the pairs not yet read.
    lengths: &'a [u8],
    /// Their names and values, each followed by a NUL.
    strings: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        let (pair, lengths) = self.lengths.split_at_checked(8)?;
        let (name_len, value_len) = pair.split_at(4);
        let name = self.take(name_len)?;
        let value = self.take(value_len)?;
        self.lengths = lengths;
        Some((name, value))
    }
}

impl<'a> Pairs<'a> {
    /// The pairs of `buffer`, unchecked past the count: each is checked as it is walked. For
    /// a walk that acts only once it has read them all (the request path's one walk), and
    /// checks [`Pairs::is_complete`] after. `None` if the count does not fit the buffer.
    pub fn unchecked(buffer: &'a [u8]) -> Option<Pairs<'a>> {
        if buffer.is_empty() {
            return Some(Pairs::default());
        }
        let count = usize::try_from(read_u32(buffer, 0)?).ok()?;
        let lengths_end = count.checked_mul(8)?.checked_add(4)?;
        Some(Pairs { lengths: buffer.get(4..lengths_end)?, strings: buffer.get(lengths_end..)? })
    }

    /// After a walk: whether it read every pair (a pair that did not fit ended it early).
    pub fn is_complete(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The next string, whose length is `len` (u32 LE), and its NUL. `None` (and the cursor
    /// stops) past the end of the buffer.
    fn take(&mut self, len: &[u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let (bytes, rest) = self.strings.split_at_checked(len)?;
        self.strings = rest.get(1..)?;
        Some(bytes)
    }
}

/// The pairs of a serialized header map, borrowed from `buffer`. `None` for a buffer that
/// does not follow the layout (a host bug: never read past it, never panic on it): checked
/// here, whole, so every walk of the pairs sees all of them. Values become text where they
/// are read ([`text`]); names are compared as bytes. Test-only: the request path walks
/// [`Pairs::unchecked`] once and checks [`Pairs::is_complete`] after.
#[cfg(test)]
pub fn parse_pairs(buffer: &[u8]) -> Option<Pairs<'_>> {
    let pairs = Pairs::unchecked(buffer)?;
    let mut walk = pairs.clone();
    walk.by_ref().for_each(drop);
    walk.is_complete().then_some(pairs)
}

/// A header value as text: borrowed when valid UTF-8 (the fast, word-at-a-time check), lossy
/// otherwise (`String::from_utf8_lossy` alone walks every byte even when all are valid). A
/// token damaged by the replacement characters fails to decode: 401, never a panic.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn read_u32(buffer: &[u8], at: usize) -> Option<u32> {
    let bytes = buffer.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's side of the layout, for the tests.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend((value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend(*name);
            out.push(0);
            out.extend(*value);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_names_and_values_in_place() {
        let buffer = serialize(&[(b":path", b"/headers"), (b"authorization", b"Bearer a.b.c"), (b"x-empty", b"")]);
        let pairs: Vec<_> = parse_pairs(&buffer).unwrap().collect();
        let expected: Vec<Header<'_>> =
            vec![(b":path", b"/headers"), (b"authorization", b"Bearer a.b.c"), (b"x-empty", b"")];
        assert_eq!(pairs, expected);
        assert_eq!(parse_pairs(&[]).unwrap().count(), 0);
        assert_eq!(parse_pairs(&serialize(&[])).unwrap().count(), 0);
    }

    #[test]
    fn every_walk_sees_every_pair_in_order() {
        let names: Vec<String> = (0..70).map(|i| format!("x-h{i}")).collect();
        let pairs: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"v"[..])).collect();
        let buffer = serialize(&pairs);
        let parsed = parse_pairs(&buffer).unwrap();
        assert_eq!(parsed.clone().collect::<Vec<_>>(), pairs);
        assert_eq!(parsed.clone().collect::<Vec<_>>(), pairs, "a second walk");
    }

    #[test]
    fn values_become_text_borrowed_when_valid_lossy_when_not() {
        assert!(matches!(text(b"Bearer a.b.c"), Cow::Borrowed("Bearer a.b.c")));
        assert_eq!(text(b"Bearer a\xffb"), "Bearer a\u{fffd}b");
        let buffer = serialize(&[(b"x-\xff", b"\xfe")]);
        assert_eq!(parse_pairs(&buffer).unwrap().collect::<Vec<_>>(), vec![(&b"x-\xff"[..], &b"\xfe"[..])]);
    }

    #[test]
    fn a_malformed_buffer_is_refused_not_overread() {
        let good = serialize(&[(b"authorization", b"Bearer a.b.c"), (b"host", b"example.com")]);
        for len in 1..good.len() - 1 {
            // Every truncation is either refused or reads only what is there.
            if let Some(pairs) = parse_pairs(&good[..len]) {
                panic!("truncated to {len} bytes yet parsed {:?}", pairs.collect::<Vec<_>>());
            }
        }
        for len in 4..good.len() - 1 {
            // Walked unchecked, a truncated buffer's walk says it is not complete.
            if let Some(mut walk) = Pairs::unchecked(&good[..len]) {
                walk.by_ref().for_each(drop);
                assert!(!walk.is_complete(), "truncated to {len} bytes yet complete");
            }
        }
        let mut walk = Pairs::unchecked(&good).unwrap();
        walk.by_ref().for_each(drop);
        assert!(walk.is_complete());
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_pairs(&huge_count).is_none());
        let mut huge_len = good.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_pairs(&huge_len).is_none());
    }
}

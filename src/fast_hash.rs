//! The hash map of the request path.
//!
//! The standard map hashes with SipHash, which resists collisions an attacker crafts at some
//! cost per lookup; a request makes about twenty lookups. The maps here are keyed by what the
//! config or the proxy itself defines (model and deployment names, key digests, token scopes,
//! metric label sets), never by a key a client can add, so they hash with `foldhash`, seeded per
//! process. Maps a client's input can grow keep the standard hasher.

/// A `HashMap` hashed with `foldhash`, for keys a client cannot add.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The hasher of [`FastMap`], for hashing a value once and keying a map by the result.
pub(crate) type FastState = foldhash::fast::RandomState;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_map_finds_what_it_holds_by_borrowed_key() {
        let mut map: FastMap<String, u32> = FastMap::default();
        map.insert("gpt-4o".to_string(), 1);
        map.insert("gpt-4o-mini".to_string(), 2);
        assert_eq!(map.get("gpt-4o"), Some(&1));
        assert_eq!(map.get("gpt-4o-mini"), Some(&2));
        assert_eq!(map.get("gpt-4"), None);
    }
}

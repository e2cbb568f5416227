//! Sequence sets (RFC 3501 section 9, `sequence-set`): ranges of message sequence numbers
//! or UIDs, where `*` is the largest number in use. A range `n:m` holds every number
//! between its ends in either order, so `5:*` in a folder whose largest UID is 3 means
//! `3:5` and still matches UID 3 (RFC 3501 section 6.4.8).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Number(u32),
    Star,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet {
    ranges: Vec<(Bound, Bound)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence set {0:?}")]
pub struct SequenceSetError(pub String);

impl SequenceSet {
    pub fn parse(text: &str) -> Result<SequenceSet, SequenceSetError> {
        let error = || SequenceSetError(text.to_string());
        let bound = |part: &str| -> Result<Bound, SequenceSetError> {
            if part == "*" {
                return Ok(Bound::Star);
            }
            match part.parse::<u32>() {
                Ok(number) if number > 0 && !part.starts_with('+') => Ok(Bound::Number(number)),
                _ => Err(error()),
            }
        };
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let range = match item.split_once(':') {
                Some((low, high)) => (bound(low)?, bound(high)?),
                None => {
                    let single = bound(item)?;
                    (single.clone(), single)
                }
            };
            ranges.push(range);
        }
        Ok(SequenceSet { ranges })
    }

    /// Returns whether `number` is in the set, where `star` is the largest number in use.
    pub fn contains(&self, number: u32, star: u32) -> bool {
        let resolve = |bound: &Bound| match bound {
            Bound::Number(number) => *number,
            Bound::Star => star,
        };
        self.ranges.iter().any(|(low, high)| {
            let (a, b) = (resolve(low), resolve(high));
            a.min(b) <= number && number <= a.max(b)
        })
    }
}

/// Formats UIDs as a compact set, in the given order, as COPYUID needs (RFC 4315).
pub fn format_uids(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while index < uids.len() {
        let start = uids[index];
        let mut end = start;
        while index + 1 < uids.len() && uids[index + 1] == end + 1 {
            index += 1;
            end = uids[index];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}:{end}") });
        index += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_range_includes_highest_below_start() {
        let set = SequenceSet::parse("5:*").unwrap();
        assert!(set.contains(3, 3));
    }

    #[test]
    fn star_range_excludes_lower_numbers() {
        let set = SequenceSet::parse("5:*").unwrap();
        assert!(!set.contains(2, 3));
    }

    #[test]
    fn list_of_ranges_and_singles() {
        let set = SequenceSet::parse("1,4:6,9").unwrap();
        let matched: Vec<u32> = (1..=10).filter(|n| set.contains(*n, 10)).collect();
        assert_eq!(matched, vec![1, 4, 5, 6, 9]);
    }

    #[test]
    fn zero_and_garbage_rejected() {
        for text in ["0", "1:", "a", "1,,2", "+1"] {
            assert!(SequenceSet::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn uids_format_compactly() {
        assert_eq!(format_uids(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    }
}

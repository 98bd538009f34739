//! The consumer protocol's embedded structures, as far as the coordinator
//! reads them: the topics a member subscribes to
//! (`ConsumerProtocolSubscription`) and the partitions it is assigned
//! (`ConsumerProtocolAssignment`). Both start with a version and keep these
//! fields first in every version; what does not parse reads as nothing.

/// Big-endian reads over a byte slice.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// An array's element count (a negative one is empty).
    fn count(&mut self) -> Option<usize> {
        Some(usize::try_from(self.i32()?).unwrap_or(0))
    }
}

/// The topics a subscription names.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let parse = || {
        let mut wire = Wire(metadata);
        let _version = wire.i16()?;
        (0..wire.count()?)
            .map(|_| wire.string())
            .collect::<Option<Vec<String>>>()
    };
    parse().unwrap_or_default()
}

/// The (topic, partition) pairs an assignment holds.
pub fn assigned_partitions(assignment: &[u8]) -> Vec<(String, i32)> {
    let parse = || {
        let mut wire = Wire(assignment);
        let _version = wire.i16()?;
        let mut out = Vec::new();
        for _ in 0..wire.count()? {
            let topic = wire.string()?;
            for _ in 0..wire.count()? {
                out.push((topic.clone(), wire.i32()?));
            }
        }
        Some(out)
    };
    parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as i16).to_be_bytes());
        out.extend(s.as_bytes());
    }

    #[test]
    fn reads_subscriptions_and_assignments_and_nothing_from_garbage() {
        let mut subscription = 1i16.to_be_bytes().to_vec();
        subscription.extend(2i32.to_be_bytes());
        string(&mut subscription, "orders");
        string(&mut subscription, "audit");
        subscription.extend((-1i32).to_be_bytes()); // user data, then owned partitions (v1)
        assert_eq!(subscribed_topics(&subscription), vec!["orders", "audit"]);

        let mut assignment = 0i16.to_be_bytes().to_vec();
        assignment.extend(1i32.to_be_bytes());
        string(&mut assignment, "orders");
        assignment.extend(2i32.to_be_bytes());
        assignment.extend(0i32.to_be_bytes());
        assignment.extend(3i32.to_be_bytes());
        assert_eq!(
            assigned_partitions(&assignment),
            vec![("orders".to_string(), 0), ("orders".to_string(), 3)]
        );

        assert!(subscribed_topics(b"").is_empty());
        assert!(subscribed_topics(&[0, 0, 0, 0, 0, 9, 0, 50]).is_empty());
        assert!(assigned_partitions(&assignment[..assignment.len() - 2]).is_empty());
    }
}

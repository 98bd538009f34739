//! Human-readable sizes in configuration: `#[serde(with = "sluice_metadata::units::bytes")]`
//! reads a byte count given as a number (`1048576`) or as text with a unit
//! (`"64MiB"`, `"4 GiB"`, `"500kB"`), and writes it back in the largest
//! binary unit that divides it exactly (`"64MiB"`). Durations use
//! `humantime_serde` (`"250ms"`, `"10m"`).

/// Serde helpers for a byte count held in any unsigned integer type.
pub mod bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    /// Text for `bytes`: `"8MiB"`, `"1500"`.
    pub fn format(bytes: u64) -> String {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if bytes >= size && bytes.is_multiple_of(size) {
                return format!("{}{unit}", bytes / size);
            }
        }
        bytes.to_string()
    }

    /// Parse `"64MiB"`, `"64 MiB"`, `"1048576"`.
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        if let Ok(bytes) = text.parse::<u64>() {
            return Ok(bytes);
        }
        text.parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|_| format!("{text:?} is not a size (a number of bytes, or e.g. \"64MiB\")"))
    }

    /// Write the size as text.
    pub fn serialize<S, T>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Copy + TryInto<u64>,
    {
        let bytes: u64 = (*value)
            .try_into()
            .map_err(|_| serde::ser::Error::custom("size out of range"))?;
        serializer.serialize_str(&format(bytes))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    /// Read a number or a text with a unit.
    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let bytes = match Given::deserialize(deserializer)? {
            Given::Number(bytes) => bytes,
            Given::Text(text) => parse(&text).map_err(de::Error::custom)?,
        };
        T::try_from(bytes).map_err(|_| de::Error::custom(format!("size {bytes} is too large")))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes_round_trip_through_text() {
            for (bytes, text) in [
                (0, "0"),
                (1500, "1500"),
                (64 << 10, "64KiB"),
                (8 << 20, "8MiB"),
                (4 << 30, "4GiB"),
                ((1 << 30) + (512 << 20), "1536MiB"),
            ] {
                assert_eq!(format(bytes), text);
                assert_eq!(parse(text), Ok(bytes));
            }
            assert_eq!(parse("64 MiB"), Ok(64 << 20));
            assert_eq!(parse("500kB"), Ok(500_000));
            assert!(parse("lots").is_err());
            assert!(parse("-1").is_err());
        }
    }
}

//! Placeholder of the partition key rules (`partition_key`): the `process`
//! branch's file replaces this one wholesale.

use md5::{Digest, Md5};

pub enum PartitionKeyRule {
    Random,
    LineHash,
    Path,
    JsonField(Vec<String>),
}

impl PartitionKeyRule {
    /// None -> Random.
    pub fn from_toml(v: Option<&toml::Value>) -> Result<PartitionKeyRule, String> {
        match v {
            None => Ok(PartitionKeyRule::Random),
            Some(toml::Value::String(s)) => match s.as_str() {
                "random" => Ok(PartitionKeyRule::Random),
                "line_hash" => Ok(PartitionKeyRule::LineHash),
                "path" => Ok(PartitionKeyRule::Path),
                o => Err(format!(
                    "partition_key {o:?}: expected \"random\", \"line_hash\", \"path\" or {{ json_field = \"a.b\" }}"
                )),
            },
            Some(toml::Value::Table(t)) => match t.get("json_field").and_then(|v| v.as_str()) {
                Some(f) if !f.is_empty() && t.len() == 1 => Ok(PartitionKeyRule::JsonField(
                    f.split('.').map(String::from).collect(),
                )),
                _ => Err("partition_key table must be { json_field = \"a.b\" }".into()),
            },
            Some(_) => Err("partition_key must be a string or { json_field = \"a.b\" }".into()),
        }
    }

    /// A valid Kinesis partition key (1..=256 bytes) for this record.
    pub fn key(&self, record: &[u8], path: &str) -> Vec<u8> {
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            PartitionKeyRule::Random => hex(&rand::random::<[u8; 16]>()).into_bytes(),
            PartitionKeyRule::Path if !path.is_empty() => {
                let mut end = path.len().min(256);
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path.as_bytes()[..end].to_vec()
            }
            _ => hex(&Md5::digest(record)).into_bytes(),
        }
    }
}

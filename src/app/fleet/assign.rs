//! TEMPORARY STUB (replaced by the real module from branch `assign`).
use std::collections::BTreeMap;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub capacity: u32,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub placed: BTreeMap<String, Vec<String>>,
    pub short: Vec<(String, u32)>,
}
impl Assignment {
    pub fn streams_of(&self, probe: &str) -> Vec<String> {
        self.placed
            .iter()
            .filter(|(_, p)| p.iter().any(|x| x == probe))
            .map(|(s, _)| s.clone())
            .collect()
    }
    pub fn loads(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in self.placed.values().flatten() {
            *m.entry(p.clone()).or_insert(0) += 1;
        }
        m
    }
}
pub fn assign(streams: &[String], members: &[Member], replicas: u32) -> Assignment {
    let mut a = Assignment::default();
    for s in streams {
        let mut r: Vec<(u64, &str)> = members
            .iter()
            .map(|m| {
                (
                    crc32fast::hash(format!("{s}/{}", m.id).as_bytes()) as u64,
                    m.id.as_str(),
                )
            })
            .collect();
        r.sort();
        let v: Vec<String> = r
            .iter()
            .take(replicas as usize)
            .map(|x| x.1.to_string())
            .collect();
        if (v.len() as u32) < replicas {
            a.short.push((s.clone(), replicas - v.len() as u32));
        }
        if !v.is_empty() {
            a.placed.insert(s.clone(), v);
        }
    }
    a
}

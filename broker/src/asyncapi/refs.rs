//! `$ref` resolution for an AsyncAPI document: local references (`#/components/...`) and
//! references to other files (`schemas/telemetry.yaml`, `common.json#/Reading`), a relative
//! path taken from the directory of the file that holds the reference. Each file is read and
//! parsed once (at most [`FILES_MAX`] of [`FILE_BYTES_MAX`] each); remote references
//! (`https://...`), cycles and unbounded expansion are errors naming the JSON pointer (in
//! another file: `file#pointer`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::Value;

/// `$ref`s followed in a chain before giving up (a cycle).
const REF_DEPTH_MAX: usize = 64;

/// `$ref`s a document may expand in all (a document reusing schemas many times over).
const REF_EXPANSIONS_MAX: usize = 100_000;

/// Files a document may reference (itself not counted).
pub const FILES_MAX: usize = 64;

/// Bytes of one referenced file at most.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// A key as a JSON pointer token.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `%XX` escapes of a URI fragment decoded (a `$ref` is a URI).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// A document being resolved: its parsed root, the file it came from as the references wrote
/// it (None: text given directly, which may hold local references only; relative references
/// inside it are resolved from this path's directory, as URIs are, not from a symlink's
/// target), the same file canonical (the cache, cycle and count key), and how errors name it.
#[derive(Clone)]
struct Doc {
    root: Rc<Value>,
    file: Option<PathBuf>,
    canonical: Option<PathBuf>,
    /// "" for the main document, else its path from the main document's directory.
    label: String,
}

/// Where a resolution is: the targets being expanded (a repeat is a cycle), the budget, and
/// the files read.
struct Resolving {
    stack: Vec<String>,
    expansions: usize,
    files: HashMap<PathBuf, Rc<Value>>,
    /// The main document's directory: other files are named relative to it in errors.
    home: PathBuf,
}

impl Resolving {
    /// The document `path_part` names, relative to `from`'s directory: read once.
    fn file(&mut self, from: &Doc, path_part: &str, at: &str) -> Result<Doc, String> {
        let Some(base) = &from.file else {
            return Err(format!(
                "{at}: {path_part}: a reference to another file needs the document read from a file"
            ));
        };
        let dir = base.parent().unwrap_or(Path::new("."));
        let path = dir.join(percent_decode(path_part));
        let canonical = path
            .canonicalize()
            .map_err(|e| format!("{at}: {}: {e}", path.display()))?;
        let label = canonical
            .strip_prefix(&self.home)
            .unwrap_or(&canonical)
            .display()
            .to_string();
        if let Some(root) = self.files.get(&canonical) {
            return Ok(Doc {
                root: root.clone(),
                file: Some(path),
                canonical: Some(canonical),
                label,
            });
        }
        if self.files.len() >= FILES_MAX {
            return Err(format!(
                "{at}: {path_part}: more than {FILES_MAX} files referenced"
            ));
        }
        // A regular file, read up to one byte past the bound (a device or a growing file
        // cannot make the broker read without end).
        let file = std::fs::File::open(&canonical)
            .map_err(|e| format!("{at}: {}: {e}", path.display()))?;
        let is_file = file.metadata().is_ok_and(|m| m.is_file());
        if !is_file {
            return Err(format!("{at}: {}: not a regular file", path.display()));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, FILE_BYTES_MAX + 1),
            &mut text,
        )
        .map_err(|e| format!("{at}: {}: {e}", path.display()))?;
        if text.len() as u64 > FILE_BYTES_MAX {
            return Err(format!(
                "{at}: {}: more than {FILE_BYTES_MAX} bytes",
                path.display()
            ));
        }
        let value: Value = serde_yaml::from_str(&text)
            .map_err(|e| format!("{at}: {}: not YAML or JSON: {e}", path.display()))?;
        let root = Rc::new(value);
        self.files.insert(canonical.clone(), root.clone());
        Ok(Doc {
            root,
            file: Some(path),
            canonical: Some(canonical),
            label,
        })
    }
}

/// `raw` (the document read from `file`, if it was) with every `$ref` replaced by what it
/// points to, recursively. A `$ref` object's other keys are ignored (as JSON Schema draft 7
/// does).
pub fn resolve_document(raw: &Value, file: Option<&Path>) -> Result<Value, String> {
    let canonical = file.map(|f| f.canonicalize().unwrap_or_else(|_| f.to_path_buf()));
    let home = canonical
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let doc = Doc {
        root: Rc::new(raw.clone()),
        file: file.map(Path::to_path_buf),
        canonical,
        label: String::new(),
    };
    let mut r = Resolving {
        stack: Vec::new(),
        expansions: 0,
        files: HashMap::new(),
        home,
    };
    resolve(&doc, raw, "", &mut r)
}

/// How an error names `pointer` in `doc`.
fn named(doc: &Doc, pointer: &str) -> String {
    if doc.label.is_empty() {
        pointer.to_string()
    } else {
        format!("{}#{pointer}", doc.label)
    }
}

fn resolve(doc: &Doc, v: &Value, pointer: &str, r: &mut Resolving) -> Result<Value, String> {
    match v {
        Value::Object(map) => {
            if let Some(target) = map.get("$ref") {
                let at = format!("{}/$ref", named(doc, pointer));
                let target = target
                    .as_str()
                    .ok_or_else(|| format!("{at}: not a string"))?;
                let (path_part, fragment) = target.split_once('#').unwrap_or((target, ""));
                if path_part.contains("://") {
                    return Err(format!(
                        "{at}: {target}: remote references are not read (a file path or #/...)"
                    ));
                }
                let local = percent_decode(fragment);
                let into = if path_part.is_empty() {
                    doc.clone()
                } else {
                    r.file(doc, path_part, &at)?
                };
                let key = format!(
                    "{}#{local}",
                    into.canonical
                        .as_deref()
                        .map_or(String::new(), |f| f.display().to_string())
                );
                if r.stack.contains(&key) {
                    return Err(format!(
                        "{at}: {target} refers to itself (a cycle: recursive schemas are not read)"
                    ));
                }
                r.expansions += 1;
                if r.expansions > REF_EXPANSIONS_MAX || r.stack.len() >= REF_DEPTH_MAX {
                    return Err(format!(
                        "{at}: more than {REF_EXPANSIONS_MAX} $ref expansions or {REF_DEPTH_MAX} nested"
                    ));
                }
                let root = into.root.clone();
                let found = root
                    .pointer(&local)
                    .ok_or_else(|| format!("{at}: {target} points at nothing"))?;
                r.stack.push(key);
                let resolved = resolve(&into, found, &local, r);
                r.stack.pop();
                return resolved;
            }
            let mut out = serde_json::Map::new();
            for (k, item) in map {
                let p = format!("{pointer}/{}", escape(k));
                out.insert(k.clone(), resolve(doc, item, &p, r)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| resolve(doc, item, &format!("{pointer}/{i}"), r))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringmq-refs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("schemas")).unwrap();
        d
    }

    #[test]
    fn references_to_other_files_are_read_relative_to_the_file_holding_them() {
        let d = dir("files");
        std::fs::write(
            d.join("schemas/reading.yaml"),
            "Reading:\n  type: object\n  properties:\n    unit: { $ref: 'units.json' }\n    t: { $ref: '#/Number' }\nNumber: { type: number }\n",
        )
        .unwrap();
        std::fs::write(d.join("schemas/units.json"), r#"{"enum": ["C", "F"]}"#).unwrap();
        let main = d.join("api.yaml");
        let raw = json!({
            "a": { "$ref": "schemas/reading.yaml#/Reading" },
            "b": { "$ref": "./schemas/reading.yaml#/Number" },
            "c": { "$ref": "#/a" }
        });
        let v = resolve_document(&raw, Some(&main)).unwrap();
        let reading = json!({
            "type": "object",
            "properties": { "unit": { "enum": ["C", "F"] }, "t": { "type": "number" } }
        });
        assert_eq!(v["a"], reading);
        assert_eq!(v["b"], json!({ "type": "number" }));
        assert_eq!(v["c"], reading);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_references_name_where_they_are() {
        let d = dir("bad");
        let main = d.join("api.yaml");
        std::fs::write(
            d.join("schemas/loop.yaml"),
            "A: { $ref: '#/B' }\nB: { $ref: '#/A' }\n",
        )
        .unwrap();
        std::fs::write(d.join("schemas/broken.yaml"), "a: [unclosed\n").unwrap();
        let err = |raw: Value, file: Option<&Path>| resolve_document(&raw, file).unwrap_err();
        let e = err(json!({ "x": { "$ref": "missing.yaml" } }), Some(&main));
        assert!(
            e.starts_with("/x/$ref: ") && e.contains("missing.yaml"),
            "{e}"
        );
        let e = err(
            json!({ "x": { "$ref": "https://example.com/s.json" } }),
            Some(&main),
        );
        assert!(e.contains("remote references are not read"), "{e}");
        let e = err(
            json!({ "x": { "$ref": "schemas/loop.yaml#/A" } }),
            Some(&main),
        );
        assert!(e.contains("cycle"), "{e}");
        let e = err(
            json!({ "x": { "$ref": "schemas/broken.yaml" } }),
            Some(&main),
        );
        assert!(e.contains("not YAML or JSON"), "{e}");
        let e = err(
            json!({ "x": { "$ref": "schemas/loop.yaml#/Nope" } }),
            Some(&main),
        );
        assert!(e.contains("points at nothing"), "{e}");
        let e = err(json!({ "x": { "$ref": "schemas/loop.yaml" } }), None);
        assert!(e.contains("needs the document read from a file"), "{e}");
        // Not a regular file: refused before reading (a device could never end).
        let e = err(json!({ "x": { "$ref": "/dev/zero" } }), Some(&main));
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn errors_inside_another_file_name_that_file() {
        let d = dir("inner");
        std::fs::write(
            d.join("schemas/s.yaml"),
            "S:\n  items: { $ref: '#/Gone' }\n",
        )
        .unwrap();
        let raw = json!({ "x": { "$ref": "schemas/s.yaml#/S" } });
        let e = resolve_document(&raw, Some(&d.join("api.yaml"))).unwrap_err();
        assert!(
            e.starts_with("schemas/s.yaml#/S/items/$ref: #/Gone points at nothing"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

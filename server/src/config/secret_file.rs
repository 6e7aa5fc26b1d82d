//! A secret read from a file (`--actuator-password-file`, `--database-url-file` and their
//! `*_FILE` variables): at the start, and the actuator's password again on SIGHUP. The same rules
//! both times, and errors that name the file, never its text.

use std::io::Read;
use std::path::Path;

/// Most bytes a secret's file may hold: a password or a connection string is far less, and a
/// larger file (a wrong path, `/dev/urandom`) is refused rather than cut to a wrong secret.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a secret's file was not used. `Display` names the path and the cause only.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path} is larger than 64 KiB")]
    TooBig { path: String },
}

/// The file's text without the whitespace around it (an editor's or `echo`'s newline).
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    let shown = || path.display().to_string();
    let mut text = String::new();
    // One byte past the bound tells a file of exactly the bound from a larger one.
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_string(&mut text))
        .map_err(|source| SecretFileError::Unreadable { path: shown(), source })?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretFileError::TooBig { path: shown() });
    }
    match text.trim() {
        "" => Err(SecretFileError::Empty { path: shown() }),
        secret => Ok(secret.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("iot-ws-secret-file-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
        fn file(&self, name: &str, content: &[u8]) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_text_is_read_without_the_whitespace_around_it() {
        let dir = Dir::new("trim");
        assert_eq!(read_secret_file(&dir.file("pw", b" pass word\n")).unwrap(), "pass word");
    }

    #[test]
    fn a_file_of_exactly_the_bound_is_read_whole_and_one_byte_more_is_refused() {
        let dir = Dir::new("bound");
        let whole = dir.file("whole", &vec![b'x'; MAX_SECRET_BYTES as usize]);
        assert_eq!(read_secret_file(&whole).unwrap().len(), 65_536);
        let big = dir.file("big", &vec![b'x'; MAX_SECRET_BYTES as usize + 1]);
        let err = read_secret_file(&big).unwrap_err().to_string();
        assert_eq!(err, format!("{} is larger than 64 KiB", big.display()));
    }

    #[test]
    fn errors_name_the_path_and_never_the_text() {
        let dir = Dir::new("errors");
        let blank = dir.file("blank", b" \n");
        assert_eq!(read_secret_file(&blank).unwrap_err().to_string(), format!("{} is empty", blank.display()));
        let missing = dir.0.join("missing");
        let err = read_secret_file(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", missing.display())), "{err}");
        let not_text = dir.file("binary", b"s3cret\xff");
        let err = read_secret_file(&not_text).unwrap_err().to_string();
        assert!(err.starts_with(&not_text.display().to_string()) && !err.contains("s3cret"), "{err}");
    }
}

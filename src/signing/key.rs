//! The key that signs (`--sign KEY`, `FTL_SIGNING_KEY`), as
//! `ssh-keygen -Y sign -f KEY` takes it: an OpenSSH private key file (a
//! passphrase is asked on the terminal), or a public key file whose private
//! half is held by `ssh-agent` (`SSH_AUTH_SOCK`). ed25519 and ECDSA keys;
//! FIDO keys (`sk-*`) are not supported: the verifier cannot check them.
//!
//! The agent is spoken to directly (the sign request of the SSH agent
//! protocol, draft-miller-ssh-agent): the agent client crates pull in RSA
//! support, which has an unfixed advisory, for no use here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PrivateKey, PublicKey, Signature, SshSig};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an OpenSSH private key nor a public key: {why}")]
    Format { path: PathBuf, why: String },
    #[error(
        "{0} is protected by a passphrase and there is no terminal to ask for it: \
         load it into ssh-agent (ssh-add) and give its .pub instead"
    )]
    NoTerminal(PathBuf),
    #[error("wrong passphrase for {0}")]
    Passphrase(PathBuf),
    #[error("cannot read the passphrase from the terminal: {0}")]
    Terminal(std::io::Error),
    #[error("{path} is a {algorithm} key; ftl signs with ed25519 or ECDSA keys")]
    Unsupported { path: PathBuf, algorithm: String },
    #[error(
        "{0} is a public key, so its private half must be in ssh-agent, but SSH_AUTH_SOCK is not set"
    )]
    NoAgent(PathBuf),
    #[error("ssh-agent ({socket}): {why}")]
    Agent { socket: String, why: String },
    #[error("cannot sign with {path}: {why}")]
    Sign { path: PathBuf, why: String },
}

enum Holder {
    File(Box<PrivateKey>),
    Agent { socket: PathBuf },
}

/// A key ready to sign.
pub struct SigningKey {
    path: PathBuf,
    public: KeyData,
    holder: Holder,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.path.display())
    }
}

impl SigningKey {
    /// Loads `path` (blocking: it reads a file and may ask the terminal).
    /// `agent_socket` is `SSH_AUTH_SOCK`.
    pub fn load(path: &Path, agent_socket: Option<PathBuf>) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let format = |why: String| KeyError::Format {
            path: path.to_owned(),
            why,
        };
        let (public, holder) = if text.trim_start().starts_with("-----BEGIN") {
            let mut key =
                PrivateKey::from_openssh(text.trim()).map_err(|e| format(e.to_string()))?;
            if key.is_encrypted() {
                let pass = ask_passphrase(path)?;
                key = key
                    .decrypt(pass.as_bytes())
                    .map_err(|_| KeyError::Passphrase(path.to_owned()))?;
            }
            (
                key.public_key().key_data().clone(),
                Holder::File(Box::new(key)),
            )
        } else {
            let key = PublicKey::from_openssh(text.trim()).map_err(|e| format(e.to_string()))?;
            let socket = agent_socket
                .filter(|s| !s.as_os_str().is_empty())
                .ok_or_else(|| KeyError::NoAgent(path.to_owned()))?;
            (key.key_data().clone(), Holder::Agent { socket })
        };
        use ssh_key::Algorithm;
        match public.algorithm() {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
            other => {
                return Err(KeyError::Unsupported {
                    path: path.to_owned(),
                    algorithm: other.to_string(),
                });
            }
        }
        Ok(Self {
            path: path.to_owned(),
            public,
            holder,
        })
    }

    pub fn fingerprint(&self) -> String {
        super::fingerprint(&self.public)
    }

    /// An `sshsig` signature of `message` in `namespace` (blocking: it may
    /// talk to the agent).
    pub fn sign(&self, namespace: &str, message: &[u8]) -> Result<SshSig, KeyError> {
        let failed = |why: String| KeyError::Sign {
            path: self.path.clone(),
            why,
        };
        match &self.holder {
            Holder::File(key) => key
                .sign(namespace, HashAlg::Sha512, message)
                .map_err(|e| failed(e.to_string())),
            Holder::Agent { socket } => {
                let data = SshSig::signed_data(namespace, HashAlg::Sha512, message)
                    .map_err(|e| failed(e.to_string()))?;
                let blob = PublicKey::from(self.public.clone())
                    .to_bytes()
                    .map_err(|e| failed(e.to_string()))?;
                let raw = agent_sign(socket, &blob, &data)?;
                let signature = Signature::try_from(raw.as_slice())
                    .map_err(|e| failed(format!("the agent's signature is malformed: {e}")))?;
                SshSig::new(self.public.clone(), namespace, HashAlg::Sha512, signature)
                    .map_err(|e| failed(e.to_string()))
            }
        }
    }
}

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
/// An agent answer larger than this is not a signature.
const MAX_AGENT_MESSAGE: usize = 256 * 1024;

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

/// One sign request to the agent at `socket`; the signature blob it returns.
fn agent_sign(socket: &Path, key_blob: &[u8], data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let err = |why: String| KeyError::Agent {
        socket: socket.display().to_string(),
        why,
    };
    let mut stream =
        UnixStream::connect(socket).map_err(|e| err(format!("cannot connect: {e}")))?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(120)));
    let mut body = vec![SSH_AGENTC_SIGN_REQUEST];
    put_string(&mut body, key_blob);
    put_string(&mut body, data);
    body.extend_from_slice(&0u32.to_be_bytes());
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    stream
        .write_all(&msg)
        .map_err(|e| err(format!("cannot send: {e}")))?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| err(format!("no answer: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_AGENT_MESSAGE {
        return Err(err(format!("an answer of {len} bytes is not a signature")));
    }
    let mut answer = vec![0u8; len];
    stream
        .read_exact(&mut answer)
        .map_err(|e| err(format!("answer cut short: {e}")))?;
    match answer[0] {
        SSH_AGENT_SIGN_RESPONSE => {
            let rest = &answer[1..];
            let n = rest
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| err("a sign response without a signature".into()))?;
            rest.get(4..4 + n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| err("a sign response cut short".into()))
        }
        SSH_AGENT_FAILURE => Err(err(
            "it refused to sign: is the key loaded (ssh-add -l), and confirmed if it asks?".into(),
        )),
        other => Err(err(format!("unexpected answer of type {other}"))),
    }
}

/// Asks for the passphrase of `path` on the terminal, without echo.
fn ask_passphrase(path: &Path) -> Result<String, KeyError> {
    use std::os::fd::AsRawFd;
    // SAFETY: isatty only inspects a file descriptor number.
    let stdin_tty = unsafe { libc::isatty(0) } == 1;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let mut tty = match tty {
        Ok(t) if stdin_tty => t,
        _ => return Err(KeyError::NoTerminal(path.to_owned())),
    };
    let fd = tty.as_raw_fd();
    // SAFETY: an all-zero termios is a valid value for tcgetattr to fill.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal for the life of `tty`; `saved` is ours.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(KeyError::Terminal(std::io::Error::last_os_error()));
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    write!(tty, "Enter passphrase for {}: ", path.display()).map_err(KeyError::Terminal)?;
    // SAFETY: as above; the saved settings are put back below in every case.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(&tty), &mut line);
    // SAFETY: restores the settings read above on the same descriptor.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.map_err(KeyError::Terminal)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

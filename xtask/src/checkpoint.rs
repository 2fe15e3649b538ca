//! `cargo xtask checkpoint`: take a checkpoint stream from a board over TCP into a file, send a
//! file to a board, and print a file's sections (the format: docs/CHECKPOINT-FORMAT.md).
//!
//! Both directions end the same way: the receiving side answers one line, `OK\n` once it has
//! verified the whole stream to its End section, or `ERR <reason>\n` (no control characters, at
//! most [`MAX_ANSWER`] bytes), and closes.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checkpoint::{
    Error, FRAME_HEADER_LEN, HEADER_LEN, MAX_ANSWER, PAGE_SIZE, PageData, Reader, Section,
    answer_line, describe, parse_answer,
};

/// The port `recv` listens on unless `--port` says otherwise (QEMU's `guestfwd` connects the
/// board's saves to it).
pub const DEFAULT_RECV_PORT: u16 = 7071;
/// The port `send` connects to unless `--port` says otherwise (QEMU's `hostfwd` to the board's
/// listener).
pub const DEFAULT_SEND_PORT: u16 = 7070;
/// `recv`'s limit for the whole receive, the wait for the board included.
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(600);
/// `send`'s limit for trying to connect, and for each wait for the board to take data or answer.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between two attempts of `send` to reach the board.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often `receive` looks for the connection while it waits for one.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Bytes read from the socket, or handed to the reader, at once.
const PIECE: usize = 64 * 1024;
/// How long `receive` still reads after answering ERR, for the peer to take the answer.
const DRAIN: Duration = Duration::from_secs(2);
/// Memory sections `inspect` prints before it only counts them.
const MEMORY_LINES: usize = 3;

/// What `cargo xtask checkpoint` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointCommand {
    /// `recv FILE`: listen on 127.0.0.1:`port` (0: any free port) for one stream.
    Recv {
        /// Where the verified stream goes.
        file: PathBuf,
        /// The port to listen on.
        port: u16,
        /// The limit for the whole receive.
        timeout: Duration,
    },
    /// `send FILE`: send the file as it is to 127.0.0.1:`port`.
    Send {
        /// The stream to send.
        file: PathBuf,
        /// The board's port.
        port: u16,
        /// How long to try to connect, and to wait for the board each time.
        timeout: Duration,
    },
    /// `inspect FILE`.
    Inspect(PathBuf),
}

/// What `receive` took in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The instance's name.
    pub name: String,
    /// Sections before End, as End counts them.
    pub sections: u32,
    /// Pages in all Memory sections.
    pub pages: u64,
    /// Bytes of the stream.
    pub bytes: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance {}: {} sections, {} pages, {} bytes",
            self.name, self.sections, self.pages, self.bytes
        )
    }
}

/// Runs the command, printing what the user asked for on stdout.
pub fn run(command: &CheckpointCommand) -> Result<(), String> {
    match command {
        CheckpointCommand::Recv {
            file,
            port,
            timeout,
        } => {
            let parent = file.parent().filter(|dir| !dir.as_os_str().is_empty());
            if let Some(dir) = parent.filter(|dir| !dir.is_dir()) {
                return Err(format!(
                    "cannot write {}: {} is not a directory",
                    file.display(),
                    dir.display()
                ));
            }
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
                .map_err(|error| format!("cannot listen on 127.0.0.1:{port}: {error}"))?;
            let port = listener
                .local_addr()
                .map_err(|error| format!("cannot listen on 127.0.0.1:{port}: {error}"))?
                .port();
            println!("listening on 127.0.0.1:{port}");
            io::stdout()
                .flush()
                .map_err(|error| format!("cannot write to stdout: {error}"))?;
            let summary = receive(&listener, file, *timeout)?;
            println!("wrote {}: {summary}", file.display());
            Ok(())
        }
        CheckpointCommand::Send {
            file,
            port,
            timeout,
        } => {
            let bytes = read(file)?;
            println!("{}", send(&bytes, *port, *timeout)?);
            Ok(())
        }
        CheckpointCommand::Inspect(file) => {
            let bytes = read(file)?;
            let report = inspect(&bytes).map_err(|why| format!("{}: {why}", file.display()))?;
            println!("{report}");
            Ok(())
        }
    }
}

fn read(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|error| format!("cannot read {}: {error}", file.display()))
}

/// `FILE.partial`, where `receive` writes until the stream is verified.
pub fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The time left before `deadline`, `None` once it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
}

/// Takes one connection on `listener` and one checkpoint stream from it, all within `timeout`.
/// The stream goes to `FILE.partial` as it arrives and is renamed to `out` once the reader has
/// verified it to its End section with nothing after it; then the peer gets `OK\n`. On the first
/// error the peer gets `ERR reason\n`, no file is left behind, and the reason is the error.
pub fn receive(listener: &TcpListener, out: &Path, timeout: Duration) -> Result<Summary, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = accept(listener, deadline, timeout)?;
    let partial = partial_path(out);
    let result = receive_stream(&mut stream, &partial, out, deadline, timeout);
    let answer = answer_line(&result.as_ref().map(drop).map_err(String::clone));
    let answered = stream
        .write_all(answer.as_bytes())
        .and_then(|()| stream.flush());
    if result.is_err() {
        drain(&mut stream);
    }
    let _ = stream.shutdown(Shutdown::Both);
    match (result, answered) {
        (Ok(summary), Ok(())) => Ok(summary),
        (Ok(_), Err(error)) => {
            // The board did not hear OK, so it counts the transfer as failed: so do we.
            let _ = std::fs::remove_file(out);
            Err(format!(
                "the stream was complete, but the answer OK could not be sent: {error}"
            ))
        }
        (Err(why), _) => {
            remove_if_there(&partial);
            Err(why)
        }
    }
}

/// After an ERR: reads what the peer still sends, for up to [`DRAIN`] or until it closes, so that
/// closing with unread data does not reset the connection before the answer has got there.
fn drain(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + DRAIN;
    let mut buffer = vec![0u8; PIECE];
    while let Some(left) = left(until) {
        if stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn remove_if_there(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        eprintln!("xtask: cannot remove {}: {error}", path.display());
    }
}

/// The first connection to `listener` before `deadline`, in blocking mode.
fn accept(
    listener: &TcpListener,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let place = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_else(|_| "the listener".into());
    listener
        .set_nonblocking(true)
        .map_err(|error| format!("cannot poll {place}: {error}"))?;
    let accepted = loop {
        match listener.accept() {
            Ok((stream, _)) => break Ok(stream),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => match left(deadline) {
                Some(left) => std::thread::sleep(left.min(ACCEPT_POLL)),
                None => {
                    break Err(format!(
                        "nobody connected to {place} within {} s",
                        timeout.as_secs_f64()
                    ));
                }
            },
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(format!("cannot accept a connection on {place}: {error}")),
        }
    };
    let _ = listener.set_nonblocking(false);
    let stream = accepted?;
    stream
        .set_nonblocking(false)
        .map_err(|error| format!("cannot set up the connection: {error}"))?;
    Ok(stream)
}

/// Reads the stream into `partial` until a verified End, then renames `partial` to `out`.
fn receive_stream(
    stream: &mut TcpStream,
    partial: &Path,
    out: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Summary, String> {
    let mut file = File::create(partial)
        .map_err(|error| format!("cannot write {}: {error}", partial.display()))?;
    let mut reader = Reader::new();
    let mut buffer = vec![0u8; PIECE];
    let mut bytes = 0u64;
    loop {
        let too_late = || {
            format!(
                "no complete checkpoint within {} s ({bytes} bytes received)",
                timeout.as_secs_f64()
            )
        };
        let left = left(deadline).ok_or_else(too_late)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|error| format!("cannot set up the connection: {error}"))?;
        let n = match stream.read(&mut buffer) {
            Ok(0) => {
                return Err(format!(
                    "{} (the sender closed the connection after {bytes} bytes)",
                    Error::Truncated
                ));
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(too_late());
            }
            Err(error) => {
                return Err(format!(
                    "cannot read the stream after {bytes} bytes: {error}"
                ));
            }
        };
        let piece = &buffer[..n];
        bytes += n as u64;
        file.write_all(piece)
            .map_err(|error| format!("cannot write {}: {error}", partial.display()))?;
        reader.push(piece);
        let mut end = None;
        loop {
            match reader.next() {
                Ok(None) => break,
                Ok(Some(Section::End(summary))) => end = Some(summary),
                Ok(Some(_)) => {}
                Err(error) => return Err(format!("{error} ({bytes} bytes received)")),
            }
        }
        let Some(end) = end else {
            continue;
        };
        reader
            .finish()
            .map_err(|error| format!("{error} ({bytes} bytes received)"))?;
        let name = reader
            .config()
            .map(|config| config.name.clone())
            .unwrap_or_default();
        file.sync_all()
            .map_err(|error| format!("cannot write {}: {error}", partial.display()))?;
        drop(file);
        std::fs::rename(partial, out).map_err(|error| {
            format!(
                "cannot rename {} to {}: {error}",
                partial.display(),
                out.display()
            )
        })?;
        return Ok(Summary {
            name,
            sections: end.sections,
            pages: end.pages,
            bytes,
        });
    }
}

/// How one attempt of `send` ended.
enum Attempt {
    /// The board answered: `Ok` for OK, else its reason.
    Answer(Result<(), String>),
    /// Nobody took the stream and answered (yet): try again.
    Retry(String),
    /// Give up.
    Fail(String),
}

/// Sends `bytes` as they are to 127.0.0.1:`port` and returns the board's answer, `OK`. Tries to
/// connect until `timeout` has passed, and again while a connection is closed or reset before an
/// answer (QEMU's `hostfwd` accepts connections before the board listens, then drops them). Each
/// wait for the board to take data or to answer is limited to `timeout` as well. Fails with
/// `the board refused the checkpoint: reason` when the board answers `ERR reason`.
pub fn send(bytes: &[u8], port: u16, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let why = match attempt(bytes, address, timeout, deadline) {
            Attempt::Answer(Ok(())) => return Ok("OK".into()),
            Attempt::Answer(Err(reason)) => {
                return Err(format!("the board refused the checkpoint: {reason}"));
            }
            Attempt::Fail(why) => return Err(why),
            Attempt::Retry(why) => why,
        };
        match left(deadline) {
            Some(left) if left > RETRY_PAUSE => std::thread::sleep(RETRY_PAUSE),
            _ => {
                return Err(format!(
                    "{why} ({attempts} attempts in {} s)",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
}

/// Whether `error` means the peer closed or reset the connection.
fn closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

fn timed_out(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn attempt(bytes: &[u8], address: SocketAddr, timeout: Duration, deadline: Instant) -> Attempt {
    let Some(left) = left(deadline) else {
        return Attempt::Retry(format!("nobody answered on {address}"));
    };
    let mut stream = match TcpStream::connect_timeout(&address, left) {
        Ok(stream) => stream,
        Err(error) => return Attempt::Retry(format!("cannot connect to {address}: {error}")),
    };
    if let Err(error) = stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
    {
        return Attempt::Fail(format!("cannot set up the connection: {error}"));
    }
    match stream.write_all(bytes).and_then(|()| stream.flush()) {
        Ok(()) => {
            // The end of the stream: a board reading a truncated file learns it here.
            let _ = stream.shutdown(Shutdown::Write);
        }
        // An answer may have come before the end: a board refuses a stream at its first error.
        Err(error) if closed(&error) => {}
        Err(error) if timed_out(&error) => {
            return Attempt::Fail(format!(
                "{address} took no data for {} s",
                timeout.as_secs_f64()
            ));
        }
        Err(error) => return Attempt::Fail(format!("cannot send to {address}: {error}")),
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.contains(&b'\n') || answer.len() > MAX_ANSWER {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if closed(&error) => break,
            Err(error) if timed_out(&error) => {
                return Attempt::Fail(format!(
                    "{address} did not answer within {} s",
                    timeout.as_secs_f64()
                ));
            }
            Err(error) => return Attempt::Fail(format!("cannot read the answer: {error}")),
        }
    }
    if answer.is_empty() {
        return Attempt::Retry(format!("{address} closed the connection without an answer"));
    }
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    match parse_answer(&String::from_utf8_lossy(line)) {
        Some(result) => Attempt::Answer(result),
        None => Attempt::Fail(format!(
            "{address} answered something else than OK or ERR: {:?}",
            String::from_utf8_lossy(&answer)
        )),
    }
}

/// Page counts of Memory sections by encoding.
#[derive(Default)]
struct Pages {
    sections: usize,
    zero: u64,
    lz4: u64,
    raw: u64,
    /// Bytes of LZ4 and raw page data.
    data: u64,
}

/// One line per section of a checkpoint file (`checkpoint::describe`), after a line on the file
/// itself; of the Memory sections only the first three, then how many more and the totals of
/// pages by encoding. Fails with the reader's error and the byte offset of the section (or
/// header) it is about.
pub fn inspect(bytes: &[u8]) -> Result<String, String> {
    let mut lines = vec![format!(
        "checkpoint stream of {} bytes, format version {}",
        bytes.len(),
        checkpoint::VERSION
    )];
    let mut reader = Reader::new();
    let mut pages = Pages::default();
    // Where the part being read starts: the header, then each frame.
    let mut offset = 0usize;
    let failed = |error: Error, offset: usize| {
        let offset = match error {
            Error::Magic | Error::Version { .. } | Error::HeaderReserved { .. } => 0,
            _ => offset.max(HEADER_LEN),
        };
        format!("{error} (at byte {offset} of {})", bytes.len())
    };
    for piece in bytes.chunks(PIECE) {
        reader.push(piece);
        loop {
            let section = match reader.next() {
                Ok(Some(section)) => section,
                Ok(None) => break,
                Err(error) => return Err(failed(error, offset)),
            };
            offset = offset.max(HEADER_LEN);
            let body = bytes
                .get(offset + 4..offset + 8)
                .and_then(|len| len.try_into().ok())
                .map_or(0, |len| u32::from_le_bytes(len) as usize);
            offset += FRAME_HEADER_LEN + body;
            match &section {
                Section::Memory(chunk) => {
                    pages.sections += 1;
                    for page in &chunk.pages {
                        match &page.data {
                            PageData::Zero => pages.zero += 1,
                            PageData::Lz4(data) => {
                                pages.lz4 += 1;
                                pages.data += data.len() as u64;
                            }
                            PageData::Raw(data) => {
                                pages.raw += 1;
                                pages.data += data.len() as u64;
                            }
                        }
                    }
                    if pages.sections <= MEMORY_LINES {
                        lines.push(describe(&section));
                    }
                }
                Section::End(_) => {
                    if pages.sections > MEMORY_LINES {
                        let more = pages.sections - MEMORY_LINES;
                        let plural = if more == 1 { "" } else { "s" };
                        lines.push(format!("... {more} more memory section{plural}"));
                    }
                    if pages.sections > 0 {
                        let total = pages.zero + pages.lz4 + pages.raw;
                        lines.push(format!(
                            "memory in all: {} sections, {total} pages ({} zero, {} lz4, {} raw), \
                             {} bytes of page data for {} bytes of RAM",
                            pages.sections,
                            pages.zero,
                            pages.lz4,
                            pages.raw,
                            pages.data,
                            total * PAGE_SIZE as u64
                        ));
                    }
                    lines.push(describe(&section));
                }
                _ => lines.push(describe(&section)),
            }
        }
    }
    reader.finish().map_err(|error| failed(error, offset))?;
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::thread;

    use checkpoint::{InstanceConfig, MemoryChunk, VcpuState, Writer, encode_page};

    /// A scratch directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-checkpoint-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A valid stream: Config, `chunks` Memory sections of 3 pages (zero, lz4, raw), a vCPU, End.
    fn stream(chunks: u64) -> Vec<u8> {
        let mut text = [0u8; PAGE_SIZE];
        for (i, b) in text.iter_mut().enumerate() {
            *b = b"checkpoint "[i % 11];
        }
        let mut noise = [0u8; PAGE_SIZE];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for b in noise.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let mut sections = vec![Section::Config(InstanceConfig {
            name: "web".into(),
            ram_base: 0x4000_0000,
            ram_bytes: 64 * PAGE_SIZE as u64,
            vcpus: 1,
            weight: 256,
            gic_version: 3,
            spis: 32,
            counter_frequency: 62_500_000,
        })];
        for chunk in 0..chunks {
            let first = chunk * 3;
            sections.push(Section::Memory(MemoryChunk {
                pages: vec![
                    encode_page(first, &[0; PAGE_SIZE]),
                    encode_page(first + 1, &text),
                    encode_page(first + 2, &noise),
                ],
            }));
        }
        sections.push(Section::Vcpu(Box::new(VcpuState {
            pc: 0x4008_0000,
            powered_on: true,
            ..VcpuState::default()
        })));
        let mut writer = Writer::new();
        let mut out = Vec::new();
        writer.header(&mut out);
        for section in &sections {
            writer.section(section, &mut out).unwrap();
        }
        writer.end(&mut out).unwrap();
        out
    }

    /// A board that sends `bytes` in small pieces to `address`, then (without closing) reads the
    /// answer until the receiver closes.
    fn board_sending(
        address: SocketAddr,
        bytes: Vec<u8>,
        close: bool,
    ) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            for piece in bytes.chunks(1000) {
                if stream.write_all(piece).is_err() {
                    break;
                }
            }
            if close {
                stream.shutdown(Shutdown::Write).unwrap();
            }
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        })
    }

    fn local_listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    const QUICK: Duration = Duration::from_secs(5);

    #[test]
    fn recv_writes_a_verified_stream_and_answers_ok() {
        let dir = scratch("recv-ok");
        let out = dir.join("saved.ckpt");
        let bytes = stream(4);
        let (listener, address) = local_listener();
        let board = board_sending(address, bytes.clone(), false);
        let summary = receive(&listener, &out, QUICK).unwrap();
        assert_eq!(board.join().unwrap(), "OK\n");
        assert_eq!(
            summary,
            Summary {
                name: "web".into(),
                sections: 6,
                pages: 12,
                bytes: bytes.len() as u64
            }
        );
        assert_eq!(
            summary.to_string(),
            format!("instance web: 6 sections, 12 pages, {} bytes", bytes.len())
        );
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
        assert!(!partial_path(&out).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recv_refuses_a_corrupt_stream_and_leaves_no_file() {
        let dir = scratch("recv-corrupt");
        let out = dir.join("saved.ckpt");
        let mut bytes = stream(4);
        // A byte of the first Memory section's body.
        let config_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
        bytes[HEADER_LEN + FRAME_HEADER_LEN + config_len + FRAME_HEADER_LEN + 5] ^= 0x40;
        let (listener, address) = local_listener();
        let board = board_sending(address, bytes, false);
        let error = receive(&listener, &out, QUICK).unwrap_err();
        assert!(error.contains("checksum"), "{error}");
        let answer = board.join().unwrap();
        assert!(
            answer.starts_with("ERR checkpoint section 2 (memory): checksum"),
            "{answer}"
        );
        assert!(
            answer.ends_with('\n') && answer.lines().count() == 1,
            "{answer:?}"
        );
        assert!(!out.exists() && !partial_path(&out).exists());

        // Bytes after the End section are refused as well.
        let mut bytes = stream(1);
        bytes.push(0);
        let board = board_sending(address, bytes, false);
        let error = receive(&listener, &out, QUICK).unwrap_err();
        assert!(error.contains("after its end"), "{error}");
        assert!(board.join().unwrap().starts_with("ERR "));
        assert!(!out.exists() && !partial_path(&out).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recv_of_a_truncated_stream_fails_and_leaves_no_file() {
        let dir = scratch("recv-truncated");
        let out = dir.join("saved.ckpt");
        let bytes = stream(4);
        let (listener, address) = local_listener();
        let board = board_sending(address, bytes[..bytes.len() - 7].to_vec(), true);
        let error = receive(&listener, &out, QUICK).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        assert!(error.contains("closed the connection"), "{error}");
        board.join().unwrap();
        assert!(!out.exists() && !partial_path(&out).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recv_times_out() {
        let dir = scratch("recv-timeout");
        let out = dir.join("saved.ckpt");
        let (listener, address) = local_listener();
        let error = receive(&listener, &out, Duration::from_millis(100)).unwrap_err();
        assert!(error.contains("nobody connected"), "{error}");
        // Connected (as QEMU's guestfwd does when it starts), but nothing comes in time.
        let board = thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(&stream_head()).unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        });
        let error = receive(&listener, &out, Duration::from_millis(300)).unwrap_err();
        assert!(
            error.contains("no complete checkpoint within 0.3 s (16 bytes received)"),
            "{error}"
        );
        assert!(
            board
                .join()
                .unwrap()
                .starts_with("ERR no complete checkpoint")
        );
        assert!(!out.exists() && !partial_path(&out).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn stream_head() -> Vec<u8> {
        stream(0)[..HEADER_LEN].to_vec()
    }

    /// A board that reads one stream of `len` bytes (or up to EOF if `None`) and answers
    /// `answer`; returns what it read.
    fn board_answering(
        listener: TcpListener,
        len: Option<usize>,
        answer: &'static str,
    ) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            match len {
                Some(len) => {
                    got.resize(len, 0);
                    stream.read_exact(&mut got).unwrap();
                }
                None => {
                    stream.read_to_end(&mut got).unwrap();
                }
            }
            stream.write_all(answer.as_bytes()).unwrap();
            got
        })
    }

    #[test]
    fn send_reports_the_answer() {
        let bytes = stream(2);
        let (listener, address) = local_listener();
        let board = board_answering(listener, Some(bytes.len()), "OK\n");
        assert_eq!(send(&bytes, address.port(), QUICK), Ok("OK".into()));
        assert_eq!(board.join().unwrap(), bytes);

        let (listener, address) = local_listener();
        let board = board_answering(
            listener,
            None,
            "ERR checkpoint section 1 (config): checksum mismatch\r\n",
        );
        assert_eq!(
            send(b"not a checkpoint", address.port(), QUICK),
            Err(
                "the board refused the checkpoint: checkpoint section 1 (config): checksum \
                 mismatch"
                    .into()
            )
        );
        assert_eq!(board.join().unwrap(), b"not a checkpoint");

        // An answer before the end of the stream (a board stops at the first error).
        let (listener, address) = local_listener();
        let board = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; HEADER_LEN];
            stream.read_exact(&mut head).unwrap();
            stream.write_all(b"ERR bad magic\n").unwrap();
            let _ = io::copy(&mut stream, &mut io::sink());
        });
        let big = vec![0x55u8; 4 << 20];
        assert_eq!(
            send(&big, address.port(), QUICK),
            Err("the board refused the checkpoint: bad magic".into())
        );
        board.join().unwrap();

        let (listener, address) = local_listener();
        let board = board_answering(listener, None, "MAYBE\n");
        let error = send(b"x", address.port(), QUICK).unwrap_err();
        assert!(error.contains("something else than OK or ERR"), "{error}");
        board.join().unwrap();
    }

    #[test]
    fn send_retries_until_the_board_listens() {
        let bytes = stream(1);
        let port = local_listener().1.port();
        let len = bytes.len();
        let board = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
            // Like QEMU's hostfwd before the board listens: accepted, then dropped.
            drop(listener.accept().unwrap());
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = vec![0u8; len];
            stream.read_exact(&mut got).unwrap();
            stream.write_all(b"OK\n").unwrap();
            got
        });
        let started = Instant::now();
        assert_eq!(send(&bytes, port, QUICK), Ok("OK".into()));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(board.join().unwrap(), bytes);
    }

    #[test]
    fn send_gives_up_at_the_timeout() {
        let port = local_listener().1.port();
        let error = send(b"x", port, Duration::from_millis(300)).unwrap_err();
        assert!(
            error.contains(&format!("cannot connect to 127.0.0.1:{port}")),
            "{error}"
        );
        assert!(error.contains("attempts in 0.3 s"), "{error}");

        // Connections that close without an answer, every time.
        let (listener, address) = local_listener();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let _ = io::copy(&mut stream.unwrap(), &mut io::sink());
            }
        });
        let error = send(b"x", address.port(), Duration::from_millis(500)).unwrap_err();
        assert!(
            error.contains("closed the connection without an answer"),
            "{error}"
        );
    }

    #[test]
    fn answer_lines() {
        assert_eq!(answer_line(&Ok(())), "OK\n");
        assert_eq!(
            answer_line(&Err("bad\r\nthing\t!".into())),
            "ERR badthing!\n"
        );
        let long = answer_line(&Err("é".repeat(400)));
        assert!(
            long.len() <= MAX_ANSWER && long.len() >= MAX_ANSWER - 1,
            "{}",
            long.len()
        );
        assert!(long.starts_with("ERR é") && long.ends_with("é\n"));
        assert_eq!(parse_answer("OK"), Some(Ok(())));
        assert_eq!(parse_answer("ERR why\u{7}"), Some(Err("why".into())));
        assert_eq!(parse_answer("OKAY"), None);
        assert_eq!(
            partial_path(Path::new("dir/a.ckpt")),
            PathBuf::from("dir/a.ckpt.partial")
        );
    }

    #[test]
    fn inspect_prints_sections_and_summarises_memory() {
        let bytes = stream(5);
        let report = inspect(&bytes).unwrap();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "checkpoint stream of {} bytes, format version {}",
                bytes.len(),
                checkpoint::VERSION
            )
        );
        assert!(lines[1].starts_with("config: name=web ram=256 KiB at 0x40000000 vcpus=1"));
        assert_eq!(
            lines[2],
            "memory: 3 pages (1 zero, 1 lz4, 1 raw), pages 0..=2"
        );
        assert!(lines[4].ends_with("pages 6..=8"), "{report}");
        assert!(lines[5].starts_with("vcpu 0: "), "{report}");
        assert_eq!(lines[6], "... 2 more memory sections");
        assert!(
            lines[7].starts_with("memory in all: 5 sections, 15 pages (5 zero, 5 lz4, 5 raw), "),
            "{report}"
        );
        assert!(lines[7].ends_with("for 61440 bytes of RAM"), "{report}");
        assert_eq!(lines[8], "end: 7 sections, 15 pages");
        assert_eq!(lines.len(), 9);

        assert!(
            inspect(&stream(4))
                .unwrap()
                .contains("\n... 1 more memory section\n")
        );
        let short = inspect(&stream(1)).unwrap();
        assert!(!short.contains("more memory"), "{short}");
    }

    #[test]
    fn inspect_reports_placea_file_is_malformed() {
        let bytes = stream(2);
        let error = inspect(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        let end_frame = bytes.len() - FRAME_HEADER_LEN - 2;
        assert!(
            error.ends_with(&format!("(at byte {end_frame} of {})", bytes.len() - 3)),
            "{error}"
        );

        let mut corrupt = bytes.clone();
        let config_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
        let memory = HEADER_LEN + FRAME_HEADER_LEN + config_len;
        corrupt[memory + FRAME_HEADER_LEN] ^= 1;
        let error = inspect(&corrupt).unwrap_err();
        assert_eq!(
            error,
            format!(
                "checkpoint section 2 (memory): checksum mismatch (at byte {memory} of {})",
                bytes.len()
            )
        );

        let error = inspect(b"HVCKPT\0\0\x09\0\0\0\0\0\0\0").unwrap_err();
        assert!(
            error.contains("version 9") && error.ends_with("(at byte 0 of 16)"),
            "{error}"
        );
        assert!(inspect(b"").unwrap_err().contains("truncated"));
    }
}

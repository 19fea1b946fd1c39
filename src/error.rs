//! Errors and the exit-code table. Every row of the table in the README has a test in
//! `tests/exit_codes.rs`; change both together.

use std::fmt;

/// Process exit codes. The launcher passes pytest's own code (0-5) through unchanged once
/// pytest has started; these are the codes of pytest-cloud itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for succeeded.
    Success = 0,
    /// The output document was written, but some nodes were dropped or some jobs failed.
    Partial = 1,
    /// Bad command-line arguments or node syntax (EX_USAGE).
    Usage = 64,
    /// The input document is not what was expected: not JSON, wrong kind, newer format (EX_DATAERR).
    BadInput = 65,
    /// No input document: stdin is a terminal or empty where one is expected (EX_NOINPUT).
    NoInput = 66,
    /// Every node was dropped: nothing can run (EX_UNAVAILABLE).
    NoNodes = 69,
    /// A bug in pytest-cloud (EX_SOFTWARE).
    Internal = 70,
    /// A required local tool (ssh, rsync, parallel, python) is missing (EX_OSFILE).
    MissingTool = 72,
    /// A local file could not be written or read (EX_IOERR).
    Io = 74,
    /// Another run holds the lock on a node's directory (EX_TEMPFAIL).
    Busy = 75,
    /// Interrupted by SIGINT (128 + 2).
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An error that ends the command: what went wrong, in one or a few sentences, and the exit code.
#[derive(Debug)]
pub struct Error {
    pub exit: Exit,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Error { exit, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Exit::BadInput, message)
    }
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Self::new(Exit::Io, format!("{what}: {err}"))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Exit::Internal, message)
    }
}

/// A multi-line message (ssh prints several) as one line for progress output.
pub fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// How a subcommand ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All nodes / jobs succeeded.
    Complete,
    /// The document is complete but something was dropped or failed (exit 1).
    Partial,
    /// Every node was dropped (exit 69); the document still lists why.
    NoNodes,
    /// Pass a child's exit code through unchanged (the launcher with pytest's code).
    Code(i32),
}

impl Outcome {
    pub fn code(self) -> i32 {
        match self {
            Outcome::Complete => Exit::Success.code(),
            Outcome::Partial => Exit::Partial.code(),
            Outcome::NoNodes => Exit::NoNodes.code(),
            Outcome::Code(c) => c,
        }
    }
}

//! Writing to standard output without panicking when the reader goes away
//! (`sharedcare record get ... | head`): a closed pipe ends the command
//! quietly, as SIGPIPE does for other tools.

use std::io::{ErrorKind, Write};

/// Prints one line to standard output, like `println!`.
macro_rules! out {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    if let Err(e) = written
        && e.kind() == ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

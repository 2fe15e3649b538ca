//! The receiver's one-line answer at the end of a checkpoint stream: `OK`, once it verified the
//! whole stream (and, on a board, started the instance), or `ERR <reason>`.

use alloc::string::String;

/// The longest answer line a receiver sends, its newline included.
pub const MAX_ANSWER: usize = 512;

/// The receiver's answer once it has started the instance.
pub const ANSWER_OK: &str = "OK";

/// The receiver's answer line for `result`.
pub fn answer_line(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => alloc::format!("{ANSWER_OK}\n"),
        Err(why) => {
            // Bounded in bytes, not characters: the sender refuses a longer line.
            let mut line = String::from("ERR ");
            for c in why.chars().filter(|c| !c.is_control()) {
                if line.len().saturating_add(c.len_utf8()) >= MAX_ANSWER {
                    break;
                }
                line.push(c);
            }
            line.push('\n');
            line
        }
    }
}

/// Reads an answer line: `Ok` for "OK", the reason for "ERR reason" (without control
/// characters), `None` otherwise.
pub fn parse_answer(line: &str) -> Option<Result<(), String>> {
    let line = line.trim_end_matches('\r');
    if line == ANSWER_OK {
        Some(Ok(()))
    } else {
        // The reason comes from the other board and ends up on the console.
        line.strip_prefix("ERR ")
            .map(|why| Err(why.chars().filter(|c| !c.is_control()).collect()))
    }
}

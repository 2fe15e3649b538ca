//! Who gets the bytes typed on the board console: the management shell or one running instance.
//!
//! The keyboard has one *focus*. Two escape keys move it and never reach a guest: Ctrl-]
//! ([`NEXT_KEY`]) moves it to the next instance in the list (from the shell, to the first one;
//! from the last one, back to the first), and Ctrl-\ ([`SHELL_KEY`]) moves it to the management
//! shell. Instances are named by their index in the caller's list of running instances; when one
//! stops the caller reports it with [`ConsoleRouter::instance_removed`], so the focus keeps
//! following the same instance, or falls back to the shell when the focused one is gone (typed
//! bytes never silently go to a different guest).
//!
//! Output follows the focus too: the focused instance's console output is passed to the board
//! console as it is ([`ConsoleRouter::is_raw`]), so that full-screen programs and line editing in
//! the guest work; every other instance's output is shown line by line, prefixed with its name
//! and with control characters escaped (`crate::pl011::escape_controls`).

use alloc::format;
use alloc::string::String;

use crate::pl011::escape_controls;

/// Ctrl-]: moves the keyboard to the next instance.
pub const NEXT_KEY: u8 = 0x1d;
/// Ctrl-\: moves the keyboard to the management shell.
pub const SHELL_KEY: u8 = 0x1c;

/// Where the keyboard goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The management shell.
    Shell,
    /// The running instance at this index in the caller's list.
    Instance(usize),
}

impl Focus {
    /// The focused instance's index, or `None` for the shell.
    pub const fn instance(self) -> Option<usize> {
        match self {
            Self::Shell => None,
            Self::Instance(index) => Some(index),
        }
    }
}

/// What to do with one byte typed on the board console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Pass the byte to the console input of the instance at this index.
    ToInstance(usize, u8),
    /// Feed the byte to the management shell's line editor.
    ToShell(u8),
    /// The keyboard moved (the byte was an escape key, or the focused instance is gone and the
    /// byte was dropped): print a one-line notice such as [`switch_notice`] makes.
    Switched(Focus),
}

/// The board console's keyboard focus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleRouter {
    focus: Focus,
}

impl Default for ConsoleRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleRouter {
    /// A router with the keyboard on the management shell.
    pub const fn new() -> Self {
        Self {
            focus: Focus::Shell,
        }
    }

    /// Where the keyboard is now. An instance index may be stale (at or past the number of
    /// instances) until the next [`route`](Self::route) or [`clamp`](Self::clamp).
    pub const fn focus(&self) -> Focus {
        self.focus
    }

    /// Moves the keyboard to `focus` (the shell if it names an index at or past `instances`);
    /// returns where the keyboard is now.
    pub fn set_focus(&mut self, focus: Focus, instances: usize) -> Focus {
        self.focus = focus;
        self.clamp(instances);
        self.focus
    }

    /// Decides where `byte` goes while `instances` instances run.
    ///
    /// Escape keys switch the focus. Any other byte goes to the focus; if the focused instance is
    /// no longer there, the focus moves to the shell and the byte is dropped, so the operator
    /// sees the notice before typing anything else.
    pub fn route(&mut self, byte: u8, instances: usize) -> Route {
        match byte {
            SHELL_KEY => {
                self.focus = Focus::Shell;
                Route::Switched(self.focus)
            }
            NEXT_KEY => {
                self.focus = match self.focus {
                    _ if instances == 0 => Focus::Shell,
                    Focus::Instance(index) if index + 1 < instances => Focus::Instance(index + 1),
                    // From the shell, from the last instance, or from a stale index: the first.
                    _ => Focus::Instance(0),
                };
                Route::Switched(self.focus)
            }
            _ => match self.focus {
                Focus::Shell => Route::ToShell(byte),
                Focus::Instance(index) if index < instances => Route::ToInstance(index, byte),
                Focus::Instance(_) => {
                    self.focus = Focus::Shell;
                    Route::Switched(self.focus)
                }
            },
        }
    }

    /// The instance at `index` left the list (the ones after it moved down by one). Returns the
    /// new focus if the keyboard had to move to the shell because that instance was focused.
    pub fn instance_removed(&mut self, index: usize) -> Option<Focus> {
        match self.focus {
            Focus::Instance(focused) if focused == index => {
                self.focus = Focus::Shell;
                Some(self.focus)
            }
            Focus::Instance(focused) if focused > index => {
                self.focus = Focus::Instance(focused - 1);
                None
            }
            _ => None,
        }
    }

    /// An instance was inserted into the list at `index` (the ones from there moved up by one);
    /// the focus keeps following the same instance. Appending needs no call.
    pub fn instance_inserted(&mut self, index: usize) {
        if let Focus::Instance(focused) = self.focus
            && focused >= index
        {
            self.focus = Focus::Instance(focused + 1);
        }
    }

    /// Moves the keyboard to the shell if it names an index at or past `instances`; returns the
    /// new focus if it moved.
    pub fn clamp(&mut self, instances: usize) -> Option<Focus> {
        match self.focus {
            Focus::Instance(index) if index >= instances => {
                self.focus = Focus::Shell;
                Some(self.focus)
            }
            _ => None,
        }
    }

    /// Whether the instance at `index` has the keyboard, so its output goes to the board console
    /// unchanged; the others' output is prefixed with their name and escaped.
    pub fn is_raw(&self, index: usize) -> bool {
        self.focus == Focus::Instance(index)
    }
}

/// The one-line notice for a switch to `focus`; `name` is the focused instance's name (ignored
/// for the shell). Control characters in it are escaped.
pub fn switch_notice(focus: Focus, name: &str) -> String {
    match focus {
        Focus::Shell => String::from("console: keyboard to the shell (Ctrl-] instances)"),
        Focus::Instance(_) => format!(
            "console: keyboard to {} (Ctrl-] next, Ctrl-\\ shell)",
            escape_controls(name)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_to_the_shell_first() {
        let mut router = ConsoleRouter::new();
        assert_eq!(router.focus(), Focus::Shell);
        assert_eq!(router.route(b'l', 3), Route::ToShell(b'l'));
        assert_eq!(router.route(b'\r', 0), Route::ToShell(b'\r'));
    }

    #[test]
    fn ctrl_close_bracket_cycles_through_the_instances_in_order() {
        let mut router = ConsoleRouter::new();
        let mut seen = Vec::new();
        for _ in 0..4 {
            match router.route(NEXT_KEY, 3) {
                Route::Switched(focus) => seen.push(focus),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                Focus::Instance(0),
                Focus::Instance(1),
                Focus::Instance(2),
                Focus::Instance(0)
            ]
        );
        assert_eq!(router.route(b'x', 3), Route::ToInstance(0, b'x'));
        assert!(router.is_raw(0));
        assert!(!router.is_raw(1));
    }

    #[test]
    fn with_one_instance_the_next_key_stays_on_it() {
        let mut router = ConsoleRouter::new();
        assert_eq!(
            router.route(NEXT_KEY, 1),
            Route::Switched(Focus::Instance(0))
        );
        assert_eq!(
            router.route(NEXT_KEY, 1),
            Route::Switched(Focus::Instance(0))
        );
    }

    #[test]
    fn with_no_instances_the_next_key_stays_on_the_shell() {
        let mut router = ConsoleRouter::new();
        assert_eq!(router.route(NEXT_KEY, 0), Route::Switched(Focus::Shell));
        assert_eq!(router.route(b'a', 0), Route::ToShell(b'a'));
    }

    #[test]
    fn ctrl_backslash_goes_to_the_shell_from_anywhere() {
        let mut router = ConsoleRouter::new();
        router.route(NEXT_KEY, 2);
        router.route(NEXT_KEY, 2);
        assert_eq!(router.focus(), Focus::Instance(1));
        assert_eq!(router.route(SHELL_KEY, 2), Route::Switched(Focus::Shell));
        assert_eq!(router.route(SHELL_KEY, 2), Route::Switched(Focus::Shell));
        assert_eq!(router.route(b'q', 2), Route::ToShell(b'q'));
        assert!(!router.is_raw(0) && !router.is_raw(1));
    }

    #[test]
    fn escape_keys_never_reach_a_guest() {
        let mut router = ConsoleRouter::new();
        router.route(NEXT_KEY, 2);
        for byte in 0..=u8::MAX {
            match router.route(byte, 2) {
                Route::ToInstance(_, passed) => assert!(passed != NEXT_KEY && passed != SHELL_KEY),
                Route::Switched(_) => {
                    assert!(byte == NEXT_KEY || byte == SHELL_KEY);
                    router.set_focus(Focus::Instance(0), 2);
                }
                Route::ToShell(_) => panic!("byte {byte:#x} went to the shell"),
            }
        }
    }

    #[test]
    fn removing_the_focused_instance_moves_the_keyboard_to_the_shell() {
        let mut router = ConsoleRouter::new();
        router.set_focus(Focus::Instance(1), 3);
        assert_eq!(router.instance_removed(1), Some(Focus::Shell));
        assert_eq!(router.route(b'a', 2), Route::ToShell(b'a'));
    }

    #[test]
    fn removing_an_earlier_instance_keeps_following_the_focused_one() {
        let mut router = ConsoleRouter::new();
        router.set_focus(Focus::Instance(2), 3);
        assert_eq!(router.instance_removed(0), None);
        assert_eq!(router.focus(), Focus::Instance(1));
        assert!(router.is_raw(1));
        assert_eq!(router.instance_removed(2), None);
        assert_eq!(router.focus(), Focus::Instance(1));
        assert_eq!(router.route(b'z', 2), Route::ToInstance(1, b'z'));
    }

    #[test]
    fn inserting_before_the_focused_instance_keeps_following_it() {
        let mut router = ConsoleRouter::new();
        router.set_focus(Focus::Instance(1), 2);
        router.instance_inserted(2);
        assert_eq!(router.focus(), Focus::Instance(1));
        router.instance_inserted(0);
        assert_eq!(router.focus(), Focus::Instance(2));
        router.set_focus(Focus::Shell, 3);
        router.instance_inserted(0);
        assert_eq!(router.focus(), Focus::Shell);
    }

    #[test]
    fn a_stale_focus_drops_the_byte_and_switches_to_the_shell() {
        let mut router = ConsoleRouter::new();
        router.set_focus(Focus::Instance(2), 3);
        // The caller's list shrank without telling the router.
        assert_eq!(router.route(b'x', 2), Route::Switched(Focus::Shell));
        assert_eq!(router.route(b'x', 2), Route::ToShell(b'x'));

        router.set_focus(Focus::Instance(2), 3);
        assert_eq!(router.clamp(3), None);
        assert_eq!(router.clamp(1), Some(Focus::Shell));
        assert_eq!(router.clamp(1), None);

        // From a stale index the next key starts over at the first instance.
        router.set_focus(Focus::Instance(2), 3);
        assert_eq!(
            router.route(NEXT_KEY, 2),
            Route::Switched(Focus::Instance(0))
        );
    }

    #[test]
    fn set_focus_refuses_an_index_out_of_range() {
        let mut router = ConsoleRouter::new();
        assert_eq!(router.set_focus(Focus::Instance(5), 2), Focus::Shell);
        assert_eq!(router.set_focus(Focus::Instance(1), 2), Focus::Instance(1));
        assert_eq!(Focus::Instance(1).instance(), Some(1));
        assert_eq!(Focus::Shell.instance(), None);
    }

    #[test]
    fn only_the_focused_instance_is_raw() {
        let mut router = ConsoleRouter::new();
        assert!((0..4).all(|index| !router.is_raw(index)));
        router.set_focus(Focus::Instance(3), 4);
        assert_eq!(
            (0..4).map(|index| router.is_raw(index)).collect::<Vec<_>>(),
            [false, false, false, true]
        );
    }

    #[test]
    fn notices_name_the_keys() {
        assert_eq!(
            switch_notice(Focus::Instance(0), "web"),
            "console: keyboard to web (Ctrl-] next, Ctrl-\\ shell)"
        );
        assert_eq!(
            switch_notice(Focus::Shell, "ignored"),
            "console: keyboard to the shell (Ctrl-] instances)"
        );
        assert_eq!(
            switch_notice(Focus::Instance(0), "a\x1bb"),
            "console: keyboard to a\\x1bb (Ctrl-] next, Ctrl-\\ shell)"
        );
    }
}

//! Reading a body the way etcd's gateway does (Go's `encoding/json`
//! `Decoder`): one JSON value at a time from the front of the body, with
//! Go's syntax error messages ("invalid character 'b' looking for beginning
//! of object key string"), so curl scripts that check them see etcd's words.
//!
//! This is a port of the state machine of Go's `encoding/json` scanner:
//! [`next_value`] finds where the first value of a buffer ends without
//! building it; serde then decodes that slice.

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A complete value in `buf[start..end]`; the next one starts at `end`.
    Value { start: usize, end: usize },
    /// Only whitespace (Go's `io.EOF`).
    Empty,
    /// A value has begun but the buffer ends before it does; at the end of
    /// the body this is Go's "unexpected EOF".
    Incomplete,
    /// A syntax error, in Go's words.
    Invalid(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Parse {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    BeginValueOrEmpty,
    BeginValue,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    InString,
    InStringEsc,
    /// Inside `\u`, with this many hex digits read.
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside a literal: the rest still expected and the literal's name.
    Literal(&'static [u8], &'static str),
}

/// One step's outcome.
enum Step {
    Continue,
    /// The top-level value ended with the byte just read.
    EndNow,
    /// The top-level value (a number) ended before the byte just read.
    EndBefore,
    Error(String),
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Find the first JSON value of `buf`. `eof` tells that no more bytes
/// follow (a number at the very end is then complete).
pub fn next_value(buf: &[u8], eof: bool) -> Scan {
    let mut scanner = Scanner {
        state: State::BeginValue,
        stack: Vec::new(),
    };
    let Some(start) = buf.iter().position(|&c| !is_space(c)) else {
        return Scan::Empty;
    };
    for (i, &c) in buf.iter().enumerate().skip(start) {
        match scanner.step(c) {
            Step::Continue => {}
            Step::EndNow => return Scan::Value { start, end: i + 1 },
            Step::EndBefore => return Scan::Value { start, end: i },
            Step::Error(e) => return Scan::Invalid(e),
        }
    }
    // A top-level number ends at the end of the input.
    let number_done = scanner.stack.is_empty()
        && matches!(
            scanner.state,
            State::Zero | State::One | State::Dot0 | State::E0
        );
    if eof && number_done {
        Scan::Value {
            start,
            end: buf.len(),
        }
    } else {
        Scan::Incomplete
    }
}

struct Scanner {
    state: State,
    stack: Vec<Parse>,
}

impl Scanner {
    fn error(&self, c: u8, context: &str) -> Step {
        Step::Error(format!("invalid character {} {context}", quote_char(c)))
    }

    fn step(&mut self, c: u8) -> Step {
        use State::*;
        match self.state {
            BeginValueOrEmpty => {
                if is_space(c) {
                    return Step::Continue;
                }
                if c == b']' {
                    return self.end_value(c);
                }
                self.begin_value(c)
            }
            BeginValue => self.begin_value(c),
            BeginStringOrEmpty => {
                if is_space(c) {
                    return Step::Continue;
                }
                if c == b'}' {
                    if let Some(last) = self.stack.last_mut() {
                        *last = Parse::ObjectValue;
                    }
                    return self.end_value(c);
                }
                self.begin_string(c)
            }
            BeginString => self.begin_string(c),
            EndValue => self.end_value(c),
            InString => {
                match c {
                    b'"' => self.state = EndValue,
                    b'\\' => self.state = InStringEsc,
                    c if c < 0x20 => return self.error(c, "in string literal"),
                    _ => {}
                }
                if c == b'"' && self.stack.is_empty() {
                    return Step::EndNow;
                }
                Step::Continue
            }
            InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = InString;
                    Step::Continue
                }
                b'u' => {
                    self.state = InStringEscU(0);
                    Step::Continue
                }
                _ => self.error(c, "in string escape code"),
            },
            InStringEscU(n) => {
                if !c.is_ascii_hexdigit() {
                    return self.error(c, "in \\u hexadecimal character escape");
                }
                self.state = if n == 3 {
                    InString
                } else {
                    InStringEscU(n + 1)
                };
                Step::Continue
            }
            Neg => match c {
                b'0' => {
                    self.state = Zero;
                    Step::Continue
                }
                b'1'..=b'9' => {
                    self.state = One;
                    Step::Continue
                }
                _ => self.error(c, "in numeric literal"),
            },
            One => {
                if c.is_ascii_digit() {
                    return Step::Continue;
                }
                self.zero(c)
            }
            Zero => self.zero(c),
            Dot => {
                if c.is_ascii_digit() {
                    self.state = Dot0;
                    return Step::Continue;
                }
                self.error(c, "after decimal point in numeric literal")
            }
            Dot0 => match c {
                b'0'..=b'9' => Step::Continue,
                b'e' | b'E' => {
                    self.state = E;
                    Step::Continue
                }
                _ => self.number_end(c),
            },
            E => {
                if c == b'+' || c == b'-' {
                    self.state = ESign;
                    return Step::Continue;
                }
                self.e_sign(c)
            }
            ESign => self.e_sign(c),
            E0 => {
                if c.is_ascii_digit() {
                    return Step::Continue;
                }
                self.number_end(c)
            }
            Literal(rest, name) => {
                let Some((&want, more)) = rest.split_first() else {
                    return self.end_value(c);
                };
                if c != want {
                    let context = format!("in literal {name} (expecting {})", quote_char(want));
                    return self.error(c, &context);
                }
                if more.is_empty() {
                    self.state = EndValue;
                    if self.stack.is_empty() {
                        return Step::EndNow;
                    }
                } else {
                    self.state = Literal(more, name);
                }
                Step::Continue
            }
        }
    }

    fn begin_value(&mut self, c: u8) -> Step {
        use State::*;
        if is_space(c) {
            return Step::Continue;
        }
        self.state = match c {
            b'{' => {
                self.stack.push(Parse::ObjectKey);
                BeginStringOrEmpty
            }
            b'[' => {
                self.stack.push(Parse::ArrayValue);
                BeginValueOrEmpty
            }
            b'"' => InString,
            b'-' => Neg,
            b'0' => Zero,
            b'1'..=b'9' => One,
            b't' => Literal(b"rue", "true"),
            b'f' => Literal(b"alse", "false"),
            b'n' => Literal(b"ull", "null"),
            _ => return self.error(c, "looking for beginning of value"),
        };
        Step::Continue
    }

    fn begin_string(&mut self, c: u8) -> Step {
        if is_space(c) {
            return Step::Continue;
        }
        if c == b'"' {
            self.state = State::InString;
            return Step::Continue;
        }
        self.error(c, "looking for beginning of object key string")
    }

    fn zero(&mut self, c: u8) -> Step {
        match c {
            b'.' => {
                self.state = State::Dot;
                Step::Continue
            }
            b'e' | b'E' => {
                self.state = State::E;
                Step::Continue
            }
            _ => self.number_end(c),
        }
    }

    fn e_sign(&mut self, c: u8) -> Step {
        if c.is_ascii_digit() {
            self.state = State::E0;
            return Step::Continue;
        }
        self.error(c, "in exponent of numeric literal")
    }

    /// A number ended before `c`.
    fn number_end(&mut self, c: u8) -> Step {
        if self.stack.is_empty() {
            return Step::EndBefore;
        }
        self.end_value(c)
    }

    fn end_value(&mut self, c: u8) -> Step {
        let Some(&top) = self.stack.last() else {
            // Only reached after a complete top-level value.
            return Step::EndBefore;
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Step::Continue;
        }
        match top {
            Parse::ObjectKey => {
                if c == b':' {
                    if let Some(last) = self.stack.last_mut() {
                        *last = Parse::ObjectValue;
                    }
                    self.state = State::BeginValue;
                    return Step::Continue;
                }
                self.error(c, "after object key")
            }
            Parse::ObjectValue => match c {
                b',' => {
                    if let Some(last) = self.stack.last_mut() {
                        *last = Parse::ObjectKey;
                    }
                    self.state = State::BeginString;
                    Step::Continue
                }
                b'}' => self.pop(),
                _ => self.error(c, "after object key:value pair"),
            },
            Parse::ArrayValue => match c {
                b',' => {
                    self.state = State::BeginValue;
                    Step::Continue
                }
                b']' => self.pop(),
                _ => self.error(c, "after array element"),
            },
        }
    }

    fn pop(&mut self) -> Step {
        self.stack.pop();
        self.state = State::EndValue;
        if self.stack.is_empty() {
            Step::EndNow
        } else {
            Step::Continue
        }
    }
}

/// Go's `quoteChar`: a byte as Go's scanner prints it in an error.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\\' => r"'\\'".to_string(),
        0x07 => r"'\a'".to_string(),
        0x08 => r"'\b'".to_string(),
        0x0c => r"'\f'".to_string(),
        b'\n' => r"'\n'".to_string(),
        b'\r' => r"'\r'".to_string(),
        b'\t' => r"'\t'".to_string(),
        0x0b => r"'\v'".to_string(),
        0x20..=0x7e => format!("'{}'", c as char),
        // Go quotes the rune U+00XX: control characters escaped, the
        // rest of Latin-1 printed (the soft hyphen is not printable).
        0x00..=0x1f | 0x7f => format!(r"'\x{c:02x}'"),
        0x80..=0x9f | 0xad => format!(r"'\u{c:04x}'"),
        _ => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match next_value(s.as_bytes(), true) {
            Scan::Invalid(e) => e,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn go_messages() {
        // Each checked against etcd 3.4.23's gateway (Go 1.19).
        assert_eq!(
            err("{bad"),
            "invalid character 'b' looking for beginning of object key string"
        );
        assert_eq!(
            err(r#"{"key":x}"#),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err(r#"{"key" 1}"#),
            "invalid character '1' after object key"
        );
        assert_eq!(
            err(r#"{"a":1 "b":2}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err(r#"{"a":tru}"#),
            "invalid character '}' in literal true (expecting 'e')"
        );
        assert_eq!(
            err("{\"a\":\"\n\"}"),
            r"invalid character '\n' in string literal"
        );
        assert_eq!(err("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            err("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
    }

    #[test]
    fn values_one_at_a_time() {
        let body = br#" {"a":[1,{"b":"}"}]} {"c":-1.5e3}"#;
        let Scan::Value { start, end } = next_value(body, true) else {
            panic!()
        };
        assert_eq!(&body[start..end], br#"{"a":[1,{"b":"}"}]}"#);
        let rest = &body[end..];
        let Scan::Value { start, end } = next_value(rest, true) else {
            panic!()
        };
        assert_eq!(&rest[start..end], br#"{"c":-1.5e3}"#);
        assert_eq!(next_value(&rest[end..], true), Scan::Empty);
        assert_eq!(next_value(b"{\"a\":", true), Scan::Incomplete);
        assert_eq!(next_value(b"12", false), Scan::Incomplete);
        assert_eq!(next_value(b"12", true), Scan::Value { start: 0, end: 2 });
        assert_eq!(
            next_value(b"null{}", true),
            Scan::Value { start: 0, end: 4 }
        );
        assert_eq!(next_value(b"{}", true), Scan::Value { start: 0, end: 2 });
        assert_eq!(next_value(b"[ ]", true), Scan::Value { start: 0, end: 3 });
    }
}

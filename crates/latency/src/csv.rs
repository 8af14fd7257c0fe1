//! A small RFC 4180 reader for the model's tables: quoted fields, doubled quotes, line numbers.
//!
//! The tables are a few dozen rows written by hand, so this reads the whole text at once and
//! keeps, for every row, the line it starts on, which every error then names.

use crate::error::LatencyError;

/// One data row: the line it starts on and its fields, checked against the header's width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub line: usize,
    pub fields: Vec<String>,
}

/// A parsed table: the header must be exactly `columns`; every row has that many fields.
/// Blank lines are skipped.
pub(crate) fn read(
    table: &'static str,
    text: &str,
    columns: &[&str],
) -> Result<Vec<Row>, LatencyError> {
    let mut rows = records(table, text)?.into_iter();
    let Some(header) = rows.next() else {
        return Err(LatencyError::row(
            table,
            1,
            format!(
                "the table is empty; expected the header {}",
                columns.join(",")
            ),
        ));
    };
    if header.fields != columns {
        return Err(LatencyError::row(
            table,
            header.line,
            format!(
                "the header is {:?}; expected {}",
                header.fields.join(","),
                columns.join(",")
            ),
        ));
    }
    rows.map(|row| {
        if row.fields.len() == columns.len() {
            Ok(row)
        } else {
            Err(LatencyError::row(
                table,
                row.line,
                format!(
                    "{} fields; expected {} ({})",
                    row.fields.len(),
                    columns.len(),
                    columns.join(",")
                ),
            ))
        }
    })
    .collect()
}

/// Splits `text` into records (header included).
fn records(table: &'static str, text: &str) -> Result<Vec<Row>, LatencyError> {
    let mut rows = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    // Whether the current field was quoted: `""` is a field, an empty line is not a row.
    let mut quoted = false;
    let mut in_quotes = false;
    let mut line = 1;
    let mut start = 1;
    let mut end_row = |fields: &mut Vec<String>, field: &mut String, quoted: bool, start| {
        fields.push(std::mem::take(field));
        let blank = fields.len() == 1 && fields[0].is_empty() && !quoted;
        let done = std::mem::take(fields);
        if !blank {
            rows.push(Row {
                line: start,
                fields: done,
            });
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    if let Some(&next) = chars.peek()
                        && !matches!(next, ',' | '\n' | '\r')
                    {
                        return Err(LatencyError::row(
                            table,
                            line,
                            format!("{next:?} after the closing quote of a field"),
                        ));
                    }
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => {
                return Err(LatencyError::row(
                    table,
                    line,
                    "a quote inside an unquoted field (quote the whole field and double the quote)",
                ));
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_row(&mut fields, &mut field, quoted, start);
                quoted = false;
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(LatencyError::row(
            table,
            start,
            "a quoted field is never closed",
        ));
    }
    if !field.is_empty() || !fields.is_empty() || quoted {
        end_row(&mut fields, &mut field, quoted, start);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<(usize, Vec<String>)> {
        records("t", text)
            .unwrap()
            .into_iter()
            .map(|r| (r.line, r.fields))
            .collect()
    }

    fn error(text: &str) -> String {
        records("t", text).unwrap_err().to_string()
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        let got = fields("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\n\"two\nlines\",\"\"\nlast,row");
        let want = [
            (1, vec!["a", "b"]),
            (2, vec!["x, y", "say \"hi\""]),
            (4, vec!["two\nlines", ""]),
            (6, vec!["last", "row"]),
        ];
        let want: Vec<(usize, Vec<String>)> = want
            .iter()
            .map(|(l, f)| (*l, f.iter().map(ToString::to_string).collect()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn broken_quoting_names_the_line() {
        assert_eq!(
            error("a,b\nx,\"open\n"),
            "t, line 2: a quoted field is never closed"
        );
        assert!(error("a,b\n\n\"x\"y,z\n").starts_with("t, line 3: 'y' after the closing quote"));
        assert!(error("a,b\nx,y\"z\n").starts_with("t, line 2: a quote inside"));
    }

    #[test]
    fn header_and_width_are_checked() {
        let columns = ["a", "b"];
        assert_eq!(
            read("t", "", &columns).unwrap_err().to_string(),
            "t, line 1: the table is empty; expected the header a,b"
        );
        assert_eq!(
            read("t", "a,c\n", &columns).unwrap_err().to_string(),
            "t, line 1: the header is \"a,c\"; expected a,b"
        );
        assert_eq!(
            read("t", "a,b\n1,2\n1,2,3\n", &columns)
                .unwrap_err()
                .to_string(),
            "t, line 3: 3 fields; expected 2 (a,b)"
        );
        assert_eq!(read("t", "a,b\n1,2", &columns).unwrap().len(), 1);
    }
}

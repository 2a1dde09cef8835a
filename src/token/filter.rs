//! Validation of the `filter` field of a data-source read token.
//!
//! A filter is an SQL boolean expression that the vendor ANDs into the `WHERE`
//! clause of the queries it generates, e.g. `USER_id = 123` or
//! `region IN ('EU', 'US') AND tenant_id = 42`. Because it is spliced into SQL
//! text, it is a security boundary: it must be exactly one boolean expression
//! that cannot end the statement early, comment out the rest of the query, or
//! read other tables.
//!
//! Validation runs in four stages, each producing a user-facing [`FilterError`]:
//!
//! 1. cheap checks on the raw text (empty, length, backslashes);
//! 2. a scan of the sqlparser tokenizer's tokens (so that anything inside a
//!    string literal such as `'a;b'` is ignored): `;`, comments, `#`, exotic
//!    string-literal syntaxes;
//! 3. a scan of the same tokens for keywords that start a sub-query or a
//!    statement (see [`check_keywords`] for why this is done on tokens rather
//!    than on the AST);
//! 4. parsing with [`Parser::parse_expr`], requiring that the whole input is
//!    consumed and that the top-level expression is not a bare literal.
//!
//! The tokenizer and parser use [`GenericDialect`], a permissive superset of
//! the common dialects. Where dialects disagree on how text is split into
//! tokens (`#` comments in MySQL, backslash escapes, `$$` / `q'[..]'`
//! quoting), the filter is rejected rather than guessing which dialect the
//! vendor runs, because such a disagreement is exactly what SQL injection
//! exploits.

use sqlparser::ast::{Expr, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

/// Maximum length of a filter in bytes (after trimming surrounding whitespace).
pub const MAX_FILTER_LEN: usize = 4096;

/// Why a filter was rejected. The `Display` text is meant for end users (it is
/// shown in Kubernetes status conditions and REST 400 responses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is empty or whitespace only.
    #[error(
        "filter must not be empty: provide a single SQL boolean expression such as `tenant_id = 42`"
    )]
    Empty,

    /// The filter is longer than [`MAX_FILTER_LEN`] bytes.
    #[error("filter is too long: it is {len} bytes, the maximum is {max} bytes")]
    TooLong { len: usize, max: usize },

    /// A `;` outside a string literal.
    #[error(
        "filter must be a single SQL boolean expression: ';' is not allowed (statements cannot be chained)"
    )]
    StatementSeparator,

    /// An SQL comment (`--`, `/* */`) or a `#`, which starts a comment in MySQL.
    #[error(
        "filter must be a single SQL boolean expression: SQL comments are not allowed (found {marker})"
    )]
    Comment { marker: &'static str },

    /// A backslash anywhere in the filter.
    #[error(
        "filter must not contain a backslash ('\\'): databases disagree on whether it escapes quotes; \
         to put a quote inside a string literal, double it, e.g. 'it''s'"
    )]
    Backslash,

    /// A string literal written in a dialect-specific syntax.
    #[error(
        "filter uses an unsupported string literal syntax ({kind}); use standard single-quoted strings such as 'text'"
    )]
    UnsupportedLiteral { kind: &'static str },

    /// A sub-query (`SELECT ...`, `EXISTS (...)`, `IN (SELECT ...)`, ...).
    #[error(
        "filter must be a single SQL boolean expression without sub-queries: '{keyword}' starts a sub-query, which is not allowed"
    )]
    Subquery { keyword: String },

    /// A keyword that only appears in statements or set operations
    /// (`DROP`, `INSERT`, `UNION`, ...).
    #[error(
        "filter must be a single SQL boolean expression: the keyword '{keyword}' is not allowed \
         (statements and set operations such as UNION cannot be used in a filter)"
    )]
    ForbiddenKeyword { keyword: String },

    /// The filter is not syntactically valid SQL.
    #[error("filter is not a valid SQL expression: {message}")]
    Syntax { message: String },

    /// The filter nests parentheses or sub-expressions too deeply to be parsed safely.
    #[error(
        "filter is nested too deeply: reduce the number of nested parentheses or sub-expressions"
    )]
    TooDeeplyNested,

    /// A valid expression followed by more input, e.g. `x = 1) OR (1=1`.
    #[error(
        "filter must be a single SQL boolean expression, but the expression ends before '{found}' \
         (line {line}, column {column}); check for unbalanced parentheses, quotes or a missing AND/OR"
    )]
    TrailingInput {
        found: String,
        line: u64,
        column: u64,
    },

    /// The top-level expression is a literal such as `42` or `'abc'`.
    #[error(
        "filter must be a boolean expression, got a {kind} literal; write a condition such as `column = value`"
    )]
    NotBoolean { kind: &'static str },
}

/// Validates `filter` as one SQL boolean expression; returns it trimmed on success.
pub fn validate_filter(filter: &str) -> Result<String, FilterError> {
    let filter = filter.trim();
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(FilterError::TooLong {
            len: filter.len(),
            max: MAX_FILTER_LEN,
        });
    }
    // MySQL (by default) treats `\'` inside a literal as an escaped quote while
    // standard SQL (and our tokenizer) treats `\` as an ordinary character, so
    // `'\' OR 1=1 -- '` is a harmless literal to one and an injection to the
    // other. Backslashes are never needed in a filter: reject them outright.
    if filter.contains('\\') {
        return Err(FilterError::Backslash);
    }
    // The tokenizer expands MySQL "executable comments" (`/*! ... */`) into
    // ordinary tokens, so they would not show up as comments in the token
    // scan below. Other databases treat them as comments; reject the marker
    // wherever it appears (even inside a string literal, where it is never
    // needed in practice).
    if filter.contains("/*!") {
        return Err(FilterError::Comment {
            marker: "'/*! ... */'",
        });
    }

    let dialect = GenericDialect;
    let tokens = Tokenizer::new(&dialect, filter)
        .tokenize_with_location()
        .map_err(|e| FilterError::Syntax {
            message: e.to_string(),
        })?;

    check_tokens(&tokens)?;
    check_keywords(&tokens)?;

    // The parser keeps its default recursion limit, so deeply nested input
    // returns `RecursionLimitExceeded` instead of overflowing the stack.
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let expr = parser.parse_expr().map_err(parser_error)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(FilterError::TrailingInput {
            found: snippet(&next.token.to_string()),
            line: next.span.start.line,
            column: next.span.start.column,
        });
    }

    check_not_literal(&expr)?;
    Ok(filter.to_owned())
}

/// Maps a parser error to a user-facing error, without sqlparser's
/// "sql parser error:" prefix.
fn parser_error(e: ParserError) -> FilterError {
    match e {
        ParserError::RecursionLimitExceeded => FilterError::TooDeeplyNested,
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => {
            FilterError::Syntax { message }
        }
    }
}

/// Shortens a token's text for inclusion in an error message.
fn snippet(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}

/// How a token relates to string literals.
enum Literal {
    /// Not a string literal (keyword, identifier, number, operator, ...).
    No,
    /// A portable string literal: `'...'`, `N'...'` or `X'...'`.
    Portable,
    /// A dialect-specific string literal.
    Unsupported(&'static str),
}

fn classify_literal(token: &Token) -> Literal {
    match token {
        Token::SingleQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_) => Literal::Portable,
        Token::DoubleQuotedString(_) => Literal::Unsupported("double-quoted string"),
        Token::TripleSingleQuotedString(_) | Token::TripleDoubleQuotedString(_) => {
            Literal::Unsupported("triple-quoted string")
        }
        Token::DollarQuotedString(_) => Literal::Unsupported("dollar-quoted string $$...$$"),
        Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_) => {
            Literal::Unsupported("byte string literal b'...'")
        }
        Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_) => {
            Literal::Unsupported("raw string literal r'...'")
        }
        Token::QuoteDelimitedStringLiteral(_) | Token::NationalQuoteDelimitedStringLiteral(_) => {
            Literal::Unsupported("quote-delimited string q'[...]'")
        }
        Token::EscapedStringLiteral(_) => Literal::Unsupported("escape string E'...'"),
        Token::UnicodeStringLiteral(_) => Literal::Unsupported("Unicode escape string U&'...'"),
        _ => Literal::No,
    }
}

/// Rejects statement separators, comments and non-portable literals. Works on
/// tokens, so the same characters inside a string literal are accepted.
fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
    for TokenWithSpan { token, .. } in tokens {
        match token {
            Token::SemiColon => return Err(FilterError::StatementSeparator),
            Token::Whitespace(Whitespace::SingleLineComment { prefix, .. }) => {
                let marker = if prefix.starts_with('#') {
                    "'#'"
                } else {
                    "'--'"
                };
                return Err(FilterError::Comment { marker });
            }
            Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                return Err(FilterError::Comment {
                    marker: "'/* ... */'",
                });
            }
            Token::Whitespace(_) => {}
            // Quoted identifiers ("a#b", `a;b`) are opaque text in every dialect.
            Token::Word(w) if w.quote_style.is_some() => {}
            _ => match classify_literal(token) {
                Literal::Portable => {}
                Literal::Unsupported(kind) => {
                    return Err(FilterError::UnsupportedLiteral { kind });
                }
                // GenericDialect reads `#` as an operator or identifier
                // character, but MySQL starts a comment there; a filter
                // ending in `# ...` would then comment out whatever the
                // vendor appends after it.
                Literal::No => {
                    if token.to_string().contains('#') {
                        return Err(FilterError::Comment { marker: "'#'" });
                    }
                }
            },
        }
    }
    Ok(())
}

/// Rejects sub-queries and statement / set-operation keywords.
///
/// Why tokens and not the AST: sqlparser's `Visit` trait needs the `visitor`
/// cargo feature, which this crate does not enable, and a hand-written walk
/// over the ~70 `Expr` variants (plus function arguments, window specs, ...)
/// would silently miss sub-queries hidden in variants it forgets. (Walking
/// the tree through its `Debug` output is not an option either: it recurses
/// once per nesting level and overflows the stack on long `a+a+...` chains.)
///
/// The token scan is sound because every path from `parse_expr` into a query
/// (`(SELECT ..)`, `EXISTS (..)`, `x IN (..)`, `ARRAY(..)`, `f(SELECT ..)`)
/// starts the query right after a `(`, and a query always begins with one of
/// `WITH`, `SELECT`, `VALUES`, `VALUE (`, `TABLE`, `FROM` (FROM-first
/// select), `INSERT`, `UPDATE`, `DELETE`, `MERGE` or a further `(`. We match
/// `Token::Word`s whose `keyword` is set, which is exactly what the parser
/// matches: quoted identifiers such as `"select"` have no keyword and are
/// accepted, as are keywords inside string literals.
///
/// `SELECT`, `VALUES`, `TABLE`, and statement keywords are rejected anywhere,
/// since they never occur in a plain expression. `FROM` and `VALUE` are
/// ordinary in expressions (`EXTRACT(YEAR FROM ts)`, a column named `value`)
/// so they are only rejected where they would start a query: `FROM` right
/// after `(`, `VALUE` right after `(` and followed by `(` or `ROW`. `WITH` is
/// allowed in the type names `WITH [LOCAL] TIME ZONE`; a CTE named `time`
/// would still be caught, because a CTE body is itself a parenthesized query.
fn check_keywords(tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let keyword_at = |i: usize| match significant.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.keyword,
        _ => Keyword::NoKeyword,
    };

    for (i, token) in significant.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        if word.quote_style.is_some() {
            continue;
        }
        let after_paren = i > 0 && matches!(significant.get(i - 1), Some(Token::LParen));
        let next = significant.get(i + 1);
        let starts_subquery = match word.keyword {
            Keyword::SELECT | Keyword::VALUES | Keyword::TABLE => true,
            Keyword::WITH => {
                let time_zone = keyword_at(i + 1) == Keyword::TIME
                    || (keyword_at(i + 1) == Keyword::LOCAL && keyword_at(i + 2) == Keyword::TIME);
                !time_zone
            }
            Keyword::FROM => after_paren,
            Keyword::VALUE => {
                after_paren
                    && (matches!(next, Some(Token::LParen)) || keyword_at(i + 1) == Keyword::ROW)
            }
            _ => false,
        };
        if starts_subquery {
            return Err(FilterError::Subquery {
                keyword: word.value.to_ascii_uppercase(),
            });
        }
        if matches!(
            word.keyword,
            Keyword::INSERT
                | Keyword::UPDATE
                | Keyword::DELETE
                | Keyword::MERGE
                | Keyword::DROP
                | Keyword::ALTER
                | Keyword::CREATE
                | Keyword::TRUNCATE
                | Keyword::GRANT
                | Keyword::REVOKE
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
        ) {
            return Err(FilterError::ForbiddenKeyword {
                keyword: word.value.to_ascii_uppercase(),
            });
        }
    }
    Ok(())
}

/// Rejects a top-level expression that is obviously not boolean: a number,
/// string, NULL or placeholder literal (possibly parenthesized or signed).
/// Bare identifiers are allowed, as they may name a boolean column.
fn check_not_literal(expr: &Expr) -> Result<(), FilterError> {
    let mut expr = expr;
    loop {
        match expr {
            Expr::Nested(inner) => expr = inner,
            Expr::UnaryOp {
                op: UnaryOperator::Plus | UnaryOperator::Minus,
                expr: inner,
            } => expr = inner,
            _ => break,
        }
    }
    let Expr::Value(value) = expr else {
        return Ok(());
    };
    let kind = match &value.value {
        Value::Boolean(_) => return Ok(()),
        Value::Number(..) => "number",
        Value::Null => "NULL",
        Value::Placeholder(_) => "placeholder",
        _ => "string",
    };
    Err(FilterError::NotBoolean { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(filter: &str) {
        match validate_filter(filter) {
            Ok(v) => assert_eq!(v, filter.trim()),
            Err(e) => panic!("expected {filter:?} to be accepted, got {e:?}: {e}"),
        }
    }

    #[track_caller]
    fn err(filter: &str) -> FilterError {
        match validate_filter(filter) {
            Ok(v) => panic!("expected {filter:?} to be rejected, got Ok({v:?})"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_valid_filters() {
        for f in [
            "USER_id = 123",
            "region IN ('EU', 'US') AND tenant_id = 42",
            "a = 1 OR (b <> 2 AND NOT c >= 3)",
            "name LIKE 'abc%'",
            "name NOT LIKE '%x_'",
            "deleted_at IS NULL",
            "deleted_at IS NOT NULL AND active = TRUE",
            "amount BETWEEN 10 AND 20.5",
            "LOWER(email) = 'a@example.com'",
            "COALESCE(region, 'EU') IN ('EU')",
            "active",
            "TRUE",
            "\"select\" = 1",
            "`weird;name` = 'x'",
            "value > 10 AND (value < 100)",
            "EXTRACT(YEAR FROM created_at) = 2024",
            "CAST(ts AS TIMESTAMP WITH TIME ZONE) > '2024-01-01'",
            "x = -1",
            "tag = '#1'",
            "N'abc' = name",
            "  tenant_id = 42\n",
        ] {
            ok(f);
        }
    }

    #[test]
    fn accepts_semicolon_and_comment_markers_inside_string_literals() {
        ok("name = 'a;b'");
        ok("name = 'x -- y'");
        ok("name = '/* not a comment */'");
        ok("name = 'it''s; DROP TABLE users; --'");
        ok("note = 'SELECT * FROM users UNION SELECT 1'");
    }

    #[test]
    fn returns_trimmed_filter() {
        assert_eq!(validate_filter("  \t a = 1 \n").as_deref(), Ok("a = 1"),);
    }

    #[test]
    fn rejects_empty() {
        for f in ["", "   ", "\n\t "] {
            let e = err(f);
            assert_eq!(e, FilterError::Empty);
            assert!(e.to_string().contains("must not be empty"), "{e}");
        }
    }

    #[test]
    fn rejects_too_long() {
        let long = format!("a = '{}'", "x".repeat(MAX_FILTER_LEN));
        let e = err(&long);
        assert_eq!(
            e,
            FilterError::TooLong {
                len: long.len(),
                max: MAX_FILTER_LEN
            }
        );
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(e.to_string().contains("4096"), "{e}");

        // Exactly at the limit is fine.
        let at_limit = format!("a = '{}'", "x".repeat(MAX_FILTER_LEN - 6));
        assert_eq!(at_limit.len(), MAX_FILTER_LEN);
        ok(&at_limit);
    }

    #[test]
    fn rejects_statement_chaining() {
        for f in ["1=1; DROP TABLE users", "a = 1;", "a = 'x'; SELECT 1"] {
            let e = err(f);
            assert_eq!(e, FilterError::StatementSeparator, "{f}");
            assert!(e.to_string().contains("';' is not allowed"), "{e}");
            assert!(e.to_string().contains("cannot be chained"), "{e}");
        }
    }

    #[test]
    fn rejects_comments() {
        let e = err("1=1 --");
        assert_eq!(e, FilterError::Comment { marker: "'--'" });
        assert!(e.to_string().contains("comments are not allowed"), "{e}");
        assert!(e.to_string().contains("--"), "{e}");

        let e = err("1=1 /* x */");
        assert_eq!(
            e,
            FilterError::Comment {
                marker: "'/* ... */'"
            }
        );
        assert!(e.to_string().contains("/*"), "{e}");

        assert_eq!(
            err("a = 1 -- AND tenant_id = 42"),
            FilterError::Comment { marker: "'--'" }
        );
        // MySQL executable comments, which the tokenizer would otherwise
        // expand into plain tokens.
        for f in [
            "a = 1 /*! OR 1=1 */",
            "a = 1 /*!50000 OR 1=1*/",
            "a = '/*!'",
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::Comment {
                    marker: "'/*! ... */'"
                },
                "{f}"
            );
            assert!(e.to_string().contains("/*!"), "{e}");
        }
        // Nested comments are still one comment token.
        assert_eq!(
            err("a = 1 /* /* x */ ; DROP */"),
            FilterError::Comment {
                marker: "'/* ... */'"
            }
        );
    }

    #[test]
    fn rejects_hash_which_starts_a_mysql_comment() {
        for f in ["1=1 # rest", "1=1 AND #x", "a #> 'b' = 1"] {
            let e = err(f);
            assert_eq!(e, FilterError::Comment { marker: "'#'" }, "{f}");
            assert!(e.to_string().contains('#'), "{e}");
        }
    }

    #[test]
    fn rejects_backslashes() {
        let e = err(r"name = '\' OR 1=1 OR name = '\'");
        assert_eq!(e, FilterError::Backslash);
        assert!(e.to_string().contains("backslash"), "{e}");
    }

    #[test]
    fn rejects_dialect_specific_literals() {
        let e = err("$$ ; DROP TABLE x $$ = 1");
        assert!(
            matches!(e, FilterError::UnsupportedLiteral { kind } if kind.contains("dollar")),
            "{e:?}"
        );
        assert!(e.to_string().contains("single-quoted"), "{e}");

        let e = err("Q'{ ' ; DROP TABLE x }' = 1");
        assert!(matches!(e, FilterError::UnsupportedLiteral { .. }), "{e:?}");
    }

    #[test]
    fn rejects_subqueries() {
        for (f, kw) in [
            ("id IN (SELECT id FROM admins)", "SELECT"),
            ("EXISTS (SELECT 1)", "SELECT"),
            ("NOT EXISTS (select 1 from t)", "SELECT"),
            ("(SELECT 1) = 1", "SELECT"),
            ("LOWER((SELECT name FROM users LIMIT 1)) = 'a'", "SELECT"),
            ("x = ANY(SELECT id FROM t)", "SELECT"),
            ("ARRAY(SELECT 1) IS NOT NULL", "SELECT"),
            ("EXISTS (VALUES (1))", "VALUES"),
            ("EXISTS (VALUE (1))", "VALUE"),
            ("EXISTS (TABLE users)", "TABLE"),
            ("EXISTS (FROM users)", "FROM"),
            ("EXISTS ((FROM users))", "FROM"),
            ("EXISTS (WITH a AS (VALUES (1)) TABLE a)", "WITH"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::Subquery {
                    keyword: kw.to_owned()
                },
                "{f}"
            );
            assert!(e.to_string().contains("sub-quer"), "{e}");
            assert!(e.to_string().contains(kw), "{e}");
        }
    }

    #[test]
    fn rejects_statement_and_set_operation_keywords() {
        let e = err("x = 1 UNION SELECT password FROM users");
        // SELECT comes after UNION; the first offending keyword is reported.
        assert_eq!(
            e,
            FilterError::ForbiddenKeyword {
                keyword: "UNION".to_owned()
            }
        );
        assert!(e.to_string().contains("'UNION' is not allowed"), "{e}");

        for (f, kw) in [
            ("x = 1 OR DROP TABLE users", "DROP"),
            ("delete FROM users", "DELETE"),
            ("x = 1 INTERSECT y = 2", "INTERSECT"),
        ] {
            assert_eq!(
                err(f),
                FilterError::ForbiddenKeyword {
                    keyword: kw.to_owned()
                },
                "{f}"
            );
        }
    }

    #[test]
    fn rejects_more_than_one_expression() {
        let e = err("x = 1) OR (1=1");
        assert_eq!(
            e,
            FilterError::TrailingInput {
                found: ")".to_owned(),
                line: 1,
                column: 6
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("single SQL boolean expression"), "{msg}");
        assert!(msg.contains("')'"), "{msg}");
        assert!(msg.contains("unbalanced parentheses"), "{msg}");

        assert!(matches!(
            err("a = 1 b = 2"),
            FilterError::TrailingInput { .. }
        ));
        assert!(matches!(
            err("a = 1 garbage"),
            FilterError::TrailingInput { .. }
        ));
    }

    #[test]
    fn rejects_classic_quote_injection() {
        // Balanced in isolation (`' OR '` `1` `'='` `1`), so it is a string
        // literal followed by garbage.
        let e = err("' OR '1'='1");
        assert!(matches!(e, FilterError::TrailingInput { .. }), "{e:?}");
        assert!(
            e.to_string().contains("single SQL boolean expression"),
            "{e}"
        );

        // A genuinely unbalanced quote is a tokenizer error.
        let e = err("name = 'abc");
        assert!(
            matches!(&e, FilterError::Syntax { message } if message.contains("Unterminated string literal")),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a valid SQL expression"), "{e}");

        let e = err("' OR 1=1 OR name = '");
        assert!(
            matches!(e, FilterError::NotBoolean { kind: "string" }),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_syntax_errors() {
        for f in ["a = ", "a AND", "(a = 1", "a = = 1", "a IN ()"] {
            let e = err(f);
            assert!(matches!(e, FilterError::Syntax { .. }), "{f}: {e:?}");
            assert!(
                e.to_string()
                    .starts_with("filter is not a valid SQL expression: "),
                "{e}"
            );
        }
    }

    #[test]
    fn rejects_top_level_literals() {
        for (f, kind) in [
            ("42", "number"),
            ("(42)", "number"),
            ("-1", "number"),
            ("'abc'", "string"),
            ("NULL", "NULL"),
        ] {
            let e = err(f);
            assert_eq!(e, FilterError::NotBoolean { kind }, "{f}");
            assert!(
                e.to_string().contains("must be a boolean expression"),
                "{e}"
            );
            assert!(
                e.to_string().contains(&format!("got a {kind} literal")),
                "{e}"
            );
        }
    }

    #[test]
    fn deeply_nested_input_is_an_error_not_a_crash() {
        assert_eq!(
            err(&"(".repeat(10_000)),
            FilterError::TooLong {
                len: 10_000,
                max: MAX_FILTER_LEN
            }
        );

        // Within the length limit, nesting hits the parser's recursion limit.
        for f in [
            "(".repeat(MAX_FILTER_LEN),
            format!("{}a = 1{}", "(".repeat(2000), ")".repeat(2000)),
            format!("{}1 = 1", "- ".repeat(2000)),
        ] {
            let e = err(&f);
            assert_eq!(e, FilterError::TooDeeplyNested, "{}", &f[..20]);
            assert!(e.to_string().contains("nested too deeply"), "{e}");
        }

        // At its recursion limit sqlparser falls back to reading a keyword
        // as an identifier, so a long NOT chain stops early: still rejected,
        // as input left after the expression.
        let e = err(&format!("{}a", "NOT ".repeat(1000)));
        assert!(
            matches!(&e, FilterError::TrailingInput { found, .. } if found == "NOT"),
            "{e:?}"
        );
    }

    #[test]
    fn long_flat_chains_do_not_overflow_the_stack() {
        // Left-associative chains are parsed iteratively but produce a deep
        // tree; validation must still complete on a test thread's small stack.
        let sum = format!("{}a = 1", "a+".repeat(2040));
        assert!(sum.len() <= MAX_FILTER_LEN);
        ok(&sum);
        let and = format!("a = 1{}", " AND a = 1".repeat(400));
        assert!(and.len() <= MAX_FILTER_LEN);
        ok(&and);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for f in [
            "'",
            "\"",
            "`",
            "(",
            ")",
            "[",
            "]",
            "$",
            "$$",
            "?",
            ":",
            "::",
            "@",
            "@@version",
            "\u{0}",
            "é = 'ü'",
            "a = 'ü😀'",
            "/*",
            "*/",
            "x IN (",
            "CASE",
            "CASE WHEN",
            "\u{feff}a = 1",
            "a = 1\u{0}",
        ] {
            let _ = validate_filter(f);
        }
    }
}

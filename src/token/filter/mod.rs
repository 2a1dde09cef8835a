//! Validation of the `filter` field of a data-source read token.
//!
//! A filter is an SQL boolean expression that the vendor ANDs into the `WHERE`
//! clause of the queries it generates, e.g. `USER_id = 123` or
//! `region IN ('EU', 'US') AND tenant_id = 42`. Because it is spliced into SQL
//! text, it is a security boundary: it must be exactly one boolean expression
//! that cannot end the statement early, comment out the rest of the query, or
//! read other tables.
//!
//! Validation runs in seven stages, each producing a user-facing [`FilterError`]:
//!
//! 1. cheap checks on the raw text (empty, length, control characters such as
//!    NUL, backslashes, MySQL `/*!` comments);
//! 2. a scan of the sqlparser tokenizer's tokens (so that anything inside a
//!    string literal such as `'a;b'` is ignored): `;`, comments, `#`, exotic
//!    string-literal syntaxes, backtick / bracket quoting, double-quoted
//!    identifiers with unusual characters, placeholders, ODBC escapes `{..}`,
//!    `:=` and `@variables`;
//! 3. a scan of the same tokens for keywords that start a sub-query or a
//!    statement (see [`check_keywords`]);
//! 4. tokenizing the filter again with the tokenizer of every other dialect
//!    sqlparser ships (see [`DIALECTS`] and [`check_dialects`]) and rejecting
//!    it if any of them fails, sees a comment (Snowflake's `//`, MySQL's `#`,
//!    ...), a `;` or a placeholder, or splits the quoted text (string literals
//!    and quoted identifiers) differently from the generic reading;
//! 5. parsing with [`Parser::parse_expr`], requiring that the whole input is
//!    consumed and that the top-level expression is not a bare literal;
//! 6. a walk of the parsed AST (see [`check_ast`]) that only allows calls to
//!    the functions in [`ALLOWED_FUNCTIONS`] and rejects sub-queries again
//!    (defence in depth beside stage 3);
//! 7. a check that the expression is a condition (see [`check_condition`]):
//!    comparisons, `IN` lists, `BETWEEN`, `LIKE`, `IS [NOT] NULL`, ...,
//!    combined with `AND`, `OR`, `NOT` and parentheses, so that `a = 1 AND 1`
//!    or a bare column or keyword (`WHERE`, `NOT`) is refused.
//!
//! The tokenizer and parser use [`GenericDialect`], a permissive superset of
//! the common dialects. Where dialects disagree on how text is split into
//! tokens (`#` and `//` comments, backslash escapes, `$$` / `q'[..]'`
//! quoting), the filter is rejected rather than guessing which dialect the
//! vendor runs, because such a disagreement is exactly what SQL injection
//! exploits. Stage 4 makes that systematic for every dialect sqlparser knows;
//! dialect quirks sqlparser does not model are covered only by the
//! conservative rules of stages 1 to 3.

use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

mod ast;
mod dialects;
mod tokens;

use ast::{check_ast, check_condition, check_not_literal};
pub use dialects::DIALECTS;
use dialects::check_dialects;
use tokens::{check_keywords, check_tokens};

/// Maximum length of a filter in bytes (after trimming surrounding whitespace).
pub const MAX_FILTER_LEN: usize = 4096;

/// The functions a filter may call (compared case-insensitively, and only
/// when called by their plain, unqualified name). They are side-effect free
/// scalar functions that exist, with the same meaning, in the common
/// databases. Everything else is rejected: many databases have functions that
/// run arbitrary SQL (`query_to_xml`, `dblink_exec`), read server files
/// (`pg_read_file`, `load_file`, `lo_import`), change the session
/// (`set_config`) or stall the server (`pg_sleep`, `sleep`, `benchmark`).
///
/// Syntax forms that sqlparser parses into dedicated expression nodes rather
/// than function calls (`CAST`, `EXTRACT`, `TRIM`, `SUBSTRING`, `POSITION`,
/// `CASE`, ...) are not function calls and need no entry here.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    "LOWER",
    "UPPER",
    "COALESCE",
    "NULLIF",
    "ABS",
    "ROUND",
    "FLOOR",
    "CEIL",
    "CEILING",
    "LENGTH",
    "CHAR_LENGTH",
    "CONCAT",
    "DATE",
    "DATE_TRUNC",
    "NOW",
    "CURRENT_DATE",
    "CURRENT_TIMESTAMP",
    "TO_DATE",
    "TO_CHAR",
    "GREATEST",
    "LEAST",
    "MOD",
];

/// [`ALLOWED_FUNCTIONS`] as a comma-separated list, for error messages.
fn allowed_functions_list() -> String {
    ALLOWED_FUNCTIONS.join(", ")
}

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

    /// A part of the filter that must be a condition is some other kind of
    /// expression: `a = 1 AND 1`, `NOT`, a bare column or function call.
    /// `place` says which part (the whole filter, a side of AND / OR, the
    /// operand of NOT); `got` describes what was found there.
    #[error(
        "filter must be a boolean condition: {place} must be a condition such as `x = 1` \
         (a comparison, IN, BETWEEN, LIKE or IS [NOT] NULL, combined with AND, OR, NOT), got {got}"
    )]
    NotCondition { place: &'static str, got: String },

    /// A control character such as NUL (anything but tab, line feed and
    /// carriage return). C drivers cut strings at NUL, so the vendor's driver
    /// and the database could see different text.
    #[error(
        "filter must not contain control characters such as NUL (found {code} at character {position}); \
         only printable text, spaces, tabs and line breaks are allowed"
    )]
    ControlCharacter { code: String, position: usize },

    /// The tokenizer of one of the [`DIALECTS`] cannot read the filter at
    /// all (e.g. a quote it does not close where the generic one does).
    #[error(
        "filter cannot be read by the {dialect} SQL tokenizer ({message}); \
         a filter must mean the same in every common SQL dialect"
    )]
    DialectTokenizer {
        dialect: &'static str,
        message: String,
    },

    /// One of the [`DIALECTS`] reads part of the filter as a comment, e.g.
    /// Snowflake reads `//` (integer division elsewhere) as a line comment.
    #[error(
        "filter must not contain '{marker}': {dialect} reads it as a comment, \
         which would hide the rest of the query"
    )]
    DialectComment {
        marker: String,
        dialect: &'static str,
    },

    /// One of the [`DIALECTS`] sees a `;` outside its string literals.
    #[error(
        "filter must be a single SQL boolean expression, but {dialect} reads a ';' in it that ends \
         the statement (it reads the filter's quotes differently); write strings in plain single quotes"
    )]
    DialectStatementSeparator { dialect: &'static str },

    /// One of the [`DIALECTS`] reads part of the filter as a bind-parameter
    /// placeholder.
    #[error(
        "filter must not contain {placeholder}: {dialect} reads it as a bind-parameter placeholder; \
         write the value as a literal, e.g. `tenant_id = 42`"
    )]
    DialectPlaceholder {
        placeholder: String,
        dialect: &'static str,
    },

    /// One of the [`DIALECTS`] splits the quoted text (string literals and
    /// quoted identifiers) differently from the generic reading, so a quote
    /// that closes a string for one database opens one for another.
    #[error(
        "filter is quoted ambiguously: {dialect} reads its quoted text differently ({detail}); \
         use plain single-quoted strings such as 'text', writing a quote inside twice, e.g. 'it''s'"
    )]
    DialectQuoting {
        dialect: &'static str,
        detail: String,
    },

    /// A backtick-quoted identifier or square brackets, which databases read
    /// differently (quoted identifier in MySQL / SQL Server, operator or
    /// array syntax elsewhere).
    #[error(
        "filter uses {style}, which is not allowed because databases disagree on what it means; \
         write the column name unquoted, or in double quotes if it needs them, e.g. \"User Id\""
    )]
    QuotedIdentifier { style: &'static str },

    /// A double-quoted identifier containing characters other than letters,
    /// digits, `_`, `$` and spaces.
    #[error(
        "filter uses the double-quoted identifier \"{name}\", which is not allowed: \
         a double-quoted identifier may only contain letters, digits, '_', '$' and spaces"
    )]
    UnsafeQuotedIdentifier { name: String },

    /// A call to a function that is not in [`ALLOWED_FUNCTIONS`].
    #[error("filter calls the function {name}, which is not allowed; allowed functions: {allowed}", allowed = allowed_functions_list())]
    FunctionNotAllowed { name: String },

    /// A call to a schema-qualified function such as `pg_catalog.lower(x)`.
    #[error(
        "filter calls the schema-qualified function {name}, which is not allowed; \
         call an allowed function by its plain name (allowed functions: {allowed})",
        allowed = allowed_functions_list()
    )]
    QualifiedFunction { name: String },

    /// An allowed function used with a window, aggregate or similar clause,
    /// e.g. `LOWER(x) OVER ()`.
    #[error("filter calls the function {name} with {clause}, which is not allowed in a filter")]
    FunctionClause { name: String, clause: &'static str },

    /// A bind-parameter placeholder such as `$1`, `?` or `:name`.
    #[error(
        "filter must not contain bind-parameter placeholders (found {placeholder}); \
         write the value as a literal, e.g. `tenant_id = 42`"
    )]
    Placeholder { placeholder: String },

    /// An ODBC escape sequence such as `{fn user()}` or `{d '2024-01-01'}`.
    #[error(
        "filter must not contain ODBC escape sequences such as {{fn ...}} or {{d '...'}}: '{{' and '}}' are not allowed"
    )]
    OdbcEscape,

    /// The assignment operator `:=`.
    #[error(
        "filter must be a boolean expression: the assignment operator ':=' is not allowed; use '=' to compare values"
    )]
    Assignment,

    /// A session or user variable such as `@@version` or `@x`.
    #[error(
        "filter must not reference session or user variables (found {name}); \
         identifiers starting with or containing '@' are not allowed"
    )]
    Variable { name: String },
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
    // C drivers end a string at NUL, and other control characters (escape,
    // backspace, vertical tab, ...) are read as whitespace by some databases
    // and as part of a word by others. A filter never needs them.
    if let Some((position, c)) = filter
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(FilterError::ControlCharacter {
            code: format!("U+{:04X}", u32::from(c)),
            position: position + 1,
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
    check_dialects(filter, &tokens)?;

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
    check_ast(&expr)?;
    check_condition(&expr)?;
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

#[cfg(test)]
mod tests;

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

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArguments, ObjectNamePart, Query, SetExpr,
    UnaryOperator, Value, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::{
    AnsiDialect, BigQueryDialect, ClickHouseDialect, DatabricksDialect, Dialect, DuckDbDialect,
    GenericDialect, HiveDialect, MsSqlDialect, MySqlDialect, OracleDialect, PostgreSqlDialect,
    RedshiftSqlDialect, SQLiteDialect, SnowflakeDialect, SparkSqlDialect, TeradataDialect,
};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

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

/// Whether the content of a double-quoted identifier is plain enough to mean
/// the same in every database: letters, digits, `_`, `$` and spaces only.
fn is_plain_identifier(name: &str) -> bool {
    !name.trim().is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | ' '))
}

/// Rejects statement separators, comments, non-portable literals and
/// identifier quoting, placeholders, ODBC escapes, assignments and variables.
/// Works on tokens, so the same characters inside a string literal are
/// accepted.
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
            // A double-quoted identifier is an identifier in standard SQL but
            // a string literal in MySQL (without ANSI_QUOTES); only plain
            // names mean the same thing (and nothing dangerous) in both.
            Token::Word(w) if w.quote_style == Some('"') => {
                if !is_plain_identifier(&w.value) {
                    return Err(FilterError::UnsafeQuotedIdentifier {
                        name: snippet(&w.value),
                    });
                }
            }
            // GenericDialect reads backticks as identifier quotes, so the
            // tokenizer would hide `) ; DROP TABLE t ; SELECT (1` inside one
            // identifier, but PostgreSQL, Oracle and SQL Server do not treat
            // a backtick as a quote.
            Token::Word(w) if w.quote_style.is_some() => {
                return Err(FilterError::QuotedIdentifier {
                    style: "a backtick-quoted identifier (`...`)",
                });
            }
            // GenericDialect reads `@` as an identifier character, so
            // `@@version` and `@x` are single words; they are session / user
            // variables in MySQL and SQL Server.
            Token::Word(w) if w.value.contains('@') => {
                return Err(FilterError::Variable {
                    name: snippet(&w.value),
                });
            }
            // SQL Server reads `[...]` as a quoted identifier (which may
            // contain quotes, `;`, ...), GenericDialect as an array or
            // subscript: the two disagree on where a string literal starts.
            Token::LBracket | Token::RBracket => {
                return Err(FilterError::QuotedIdentifier {
                    style: "square brackets ([...])",
                });
            }
            Token::LBrace | Token::RBrace => return Err(FilterError::OdbcEscape),
            Token::Placeholder(p) => {
                return Err(FilterError::Placeholder {
                    placeholder: snippet(p),
                });
            }
            Token::Assignment => return Err(FilterError::Assignment),
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
/// This runs on tokens, before parsing, and [`check_ast`] checks the parsed
/// tree for sub-queries again; the two checks are independent, so a gap in
/// one (a keyword this scan does not know, an AST node the walk does not
/// expect) is covered by the other.
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

/// Walks the parsed expression (with sqlparser's derived [`Visit`], so no
/// variant, function argument or window clause is skipped) and rejects
/// function calls outside [`ALLOWED_FUNCTIONS`], schema-qualified calls,
/// sub-queries, placeholders and assignments.
fn check_ast(expr: &Expr) -> Result<(), FilterError> {
    match expr.visit(&mut AstChecker) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct AstChecker;

impl Visitor for AstChecker {
    type Break = FilterError;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<FilterError> {
        let result = match expr {
            Expr::Function(function) => check_function(function),
            Expr::Exists { .. } => Err(FilterError::Subquery {
                keyword: "EXISTS".to_owned(),
            }),
            Expr::InSubquery { .. } => Err(FilterError::Subquery {
                keyword: "IN (SELECT ...)".to_owned(),
            }),
            Expr::Subquery(query) => Err(subquery_error(query)),
            Expr::BinaryOp {
                op: BinaryOperator::Assignment,
                ..
            } => Err(FilterError::Assignment),
            Expr::Identifier(ident) if ident.quote_style.is_none() && ident.value.contains('@') => {
                Err(FilterError::Variable {
                    name: snippet(&ident.value),
                })
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    // Any query reached by the walk (function arguments, `ARRAY(...)`,
    // `x = ANY(...)`, ...) is a sub-query.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<FilterError> {
        ControlFlow::Break(subquery_error(query))
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<FilterError> {
        match &value.value {
            Value::Placeholder(p) => ControlFlow::Break(FilterError::Placeholder {
                placeholder: snippet(p),
            }),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// A [`FilterError::Subquery`] naming the keyword the query starts with.
fn subquery_error(query: &Query) -> FilterError {
    let keyword = if query.with.is_some() {
        "WITH"
    } else {
        match query.body.as_ref() {
            SetExpr::Values(_) => "VALUES",
            SetExpr::Table(_) => "TABLE",
            SetExpr::Insert(_) => "INSERT",
            SetExpr::Update(_) => "UPDATE",
            SetExpr::Delete(_) => "DELETE",
            SetExpr::Merge(_) => "MERGE",
            _ => "SELECT",
        }
    };
    FilterError::Subquery {
        keyword: keyword.to_owned(),
    }
}

/// Allows a call only to an unqualified function in [`ALLOWED_FUNCTIONS`],
/// written as a plain call (no ODBC escape, window, FILTER, ...).
fn check_function(function: &Function) -> Result<(), FilterError> {
    if function.uses_odbc_syntax {
        return Err(FilterError::OdbcEscape);
    }
    // `ARRAY(SELECT ...)`, `f(SELECT ...)`: report the sub-query, not the name.
    if let FunctionArguments::Subquery(query) = &function.args {
        return Err(subquery_error(query));
    }
    let name = match function.name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => &ident.value,
        _ => {
            return Err(FilterError::QualifiedFunction {
                name: snippet(&function.name.to_string()),
            });
        }
    };
    if !ALLOWED_FUNCTIONS
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name))
    {
        return Err(FilterError::FunctionNotAllowed {
            name: snippet(name),
        });
    }
    let clause = if !matches!(function.parameters, FunctionArguments::None) {
        Some("a parameter list")
    } else if function.over.is_some() {
        Some("an OVER (...) window")
    } else if function.filter.is_some() {
        Some("a FILTER (WHERE ...) clause")
    } else if !function.within_group.is_empty() {
        Some("a WITHIN GROUP (...) clause")
    } else if function.null_treatment.is_some() {
        Some("IGNORE / RESPECT NULLS")
    } else {
        None
    };
    match clause {
        Some(clause) => Err(FilterError::FunctionClause {
            name: snippet(name),
            clause,
        }),
        None => Ok(()),
    }
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

/// The dialects whose tokenizers must read a filter exactly as
/// [`GenericDialect`]'s does, with the name used in error messages: every
/// dialect sqlparser ships (the names `sqlparser::dialect::dialect_from_str`
/// accepts) except the generic one itself. The mainstream ones come first, so
/// that a problem several dialects share is reported under the best known
/// name. When upgrading sqlparser, add any new dialect here; the test
/// `dialect_list_covers_every_sqlparser_dialect` lists the names.
pub const DIALECTS: &[(&str, &dyn Dialect)] = &[
    ("PostgreSQL", &PostgreSqlDialect {}),
    ("MySQL", &MySqlDialect {}),
    ("Snowflake", &SnowflakeDialect),
    ("BigQuery", &BigQueryDialect),
    ("SQL Server", &MsSqlDialect {}),
    ("SQLite", &SQLiteDialect {}),
    ("Oracle", &OracleDialect),
    ("Redshift", &RedshiftSqlDialect {}),
    ("Databricks", &DatabricksDialect),
    ("Spark SQL", &SparkSqlDialect),
    ("Hive", &HiveDialect {}),
    ("ClickHouse", &ClickHouseDialect {}),
    ("DuckDB", &DuckDbDialect),
    ("Teradata", &TeradataDialect),
    ("ANSI SQL", &AnsiDialect {}),
];

/// Tokenizes `filter` with every dialect in [`DIALECTS`] and rejects it if
/// any of them reads it differently from the generic tokenizer in a way that
/// matters for injection: a tokenizer error, a comment, a `;`, a placeholder,
/// or a different sequence of quoted texts (see [`quoted_text`]).
///
/// The generic `tokens` have already passed [`check_tokens`], so they contain
/// no comment, `;` or placeholder, and their quoted texts are portable string
/// literals and plain double-quoted identifiers.
fn check_dialects(filter: &str, tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
    let expected: Vec<&str> = tokens
        .iter()
        .filter_map(|t| quoted_text(&t.token))
        .collect();
    for &(name, dialect) in DIALECTS {
        let dialect_tokens = Tokenizer::new(dialect, filter).tokenize().map_err(|e| {
            FilterError::DialectTokenizer {
                dialect: name,
                message: e.to_string(),
            }
        })?;
        for token in &dialect_tokens {
            match token {
                Token::Whitespace(Whitespace::SingleLineComment { prefix, .. }) => {
                    return Err(FilterError::DialectComment {
                        marker: prefix.trim().to_owned(),
                        dialect: name,
                    });
                }
                Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                    return Err(FilterError::DialectComment {
                        marker: "/*".to_owned(),
                        dialect: name,
                    });
                }
                Token::SemiColon => {
                    return Err(FilterError::DialectStatementSeparator { dialect: name });
                }
                Token::Placeholder(p) => {
                    return Err(FilterError::DialectPlaceholder {
                        placeholder: snippet(p),
                        dialect: name,
                    });
                }
                _ => {}
            }
        }
        let found: Vec<&str> = dialect_tokens.iter().filter_map(quoted_text).collect();
        if found != expected {
            return Err(FilterError::DialectQuoting {
                dialect: name,
                detail: quoting_difference(&expected, &found),
            });
        }
    }
    Ok(())
}

/// The text inside the quotes of a string literal (of any syntax) or a quoted
/// identifier; `None` for other tokens.
///
/// Identifiers are included because dialects disagree on which quotes delimit
/// identifiers and which delimit strings (MySQL and BigQuery read `"a"` as a
/// string, SQL Server reads `[a]` as an identifier), but every such reading
/// must agree on where the quoted text starts and ends. A plain double-quoted
/// identifier that one dialect reads as a string literal with the same text is
/// therefore accepted: the quotes enclose the same characters, so the meaning
/// of the filter can change (a column name becomes a constant), but nothing
/// outside the filter's own condition can.
fn quoted_text(token: &Token) -> Option<&str> {
    match token {
        Token::Word(w) if w.quote_style.is_some() => Some(&w.value),
        Token::SingleQuotedString(s)
        | Token::DoubleQuotedString(s)
        | Token::TripleSingleQuotedString(s)
        | Token::TripleDoubleQuotedString(s)
        | Token::SingleQuotedByteStringLiteral(s)
        | Token::DoubleQuotedByteStringLiteral(s)
        | Token::TripleSingleQuotedByteStringLiteral(s)
        | Token::TripleDoubleQuotedByteStringLiteral(s)
        | Token::SingleQuotedRawStringLiteral(s)
        | Token::DoubleQuotedRawStringLiteral(s)
        | Token::TripleSingleQuotedRawStringLiteral(s)
        | Token::TripleDoubleQuotedRawStringLiteral(s)
        | Token::NationalStringLiteral(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s)
        | Token::HexStringLiteral(s) => Some(s),
        Token::DollarQuotedString(d) => Some(&d.value),
        Token::QuoteDelimitedStringLiteral(q) | Token::NationalQuoteDelimitedStringLiteral(q) => {
            Some(&q.value)
        }
        _ => None,
    }
}

/// Describes the first difference between the generic reading's quoted texts
/// (`expected`) and another dialect's (`found`), for an error message.
fn quoting_difference(expected: &[&str], found: &[&str]) -> String {
    let i = expected
        .iter()
        .zip(found)
        .take_while(|(e, f)| e == f)
        .count();
    let show = |s: &str| format!("`{}`", snippet(s));
    match (expected.get(i), found.get(i)) {
        (Some(e), Some(f)) => format!(
            "it reads the quoted text {} where standard SQL reads {}",
            show(f),
            show(e)
        ),
        (Some(e), None) => format!(
            "it does not read {} as quoted text, standard SQL does",
            show(e)
        ),
        (None, Some(f)) => format!("it reads {} as quoted text, standard SQL does not", show(f)),
        (None, None) => "it reads the quotes differently".to_owned(),
    }
}

/// Requires `expr` to be a condition: a comparison, `IN` list, `BETWEEN`,
/// `[I]LIKE`, `IS [NOT] NULL` or `IS [NOT] TRUE / FALSE` (see
/// [`is_condition`]), or `AND`, `OR`, `NOT` and parentheses around
/// conditions, recursively. This refuses inputs that parse as an expression
/// but not as a `WHERE` condition in every database: `a = 1 AND 1`, a bare
/// column or function call, `TRUE` (SQL Server has no boolean literals), and
/// keywords that the parser reads as a column name (`WHERE`, `NOT`,
/// `EXPLAIN`).
///
/// Works with an explicit stack: a long `AND` chain is a deep tree.
fn check_condition(expr: &Expr) -> Result<(), FilterError> {
    let mut pending: Vec<(&'static str, &Expr)> = vec![("the whole filter", expr)];
    while let Some((place, mut expr)) = pending.pop() {
        while let Expr::Nested(inner) = expr {
            expr = inner;
        }
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                pending.push(("the right side of AND", right));
                pending.push(("the left side of AND", left));
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                pending.push(("the right side of OR", right));
                pending.push(("the left side of OR", left));
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr: operand,
            } => pending.push(("the operand of NOT", operand)),
            _ if is_condition(expr) => {}
            _ => {
                return Err(FilterError::NotCondition {
                    place,
                    got: describe(expr),
                });
            }
        }
    }
    Ok(())
}

/// Whether `expr` is, at its top, a predicate: an expression whose value is a
/// truth value by its syntax alone, whatever the types of its operands.
fn is_condition(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::BinaryOp {
            op: BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq,
            ..
        } | Expr::InList { .. }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
    )
}

/// Describes an expression that is not a condition, for [`FilterError::NotCondition`].
fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(..) => "a number literal".to_owned(),
            Value::Null => "NULL".to_owned(),
            Value::Boolean(true) => "the literal TRUE (write a condition instead)".to_owned(),
            Value::Boolean(false) => "the literal FALSE (write a condition instead)".to_owned(),
            Value::Placeholder(p) => format!("the placeholder {}", snippet(p)),
            _ => "a string literal".to_owned(),
        },
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            let name = snippet(&expr.to_string());
            format!(
                "the bare name `{name}` (a column or keyword on its own; \
                 to test a boolean column, compare it, e.g. `active = TRUE`)"
            )
        }
        Expr::Function(function) => format!(
            "a bare call to the function {} (compare its result with a value)",
            snippet(&function.name.to_string())
        ),
        _ => format!("the expression `{}`", snippet(&expr.to_string())),
    }
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
            "\"select\" = 1",
            "\"User Id\" = 1",
            "\"a$b_1\" = 2 AND \"Größe\" > 3",
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
    fn accepts_allowed_functions_and_syntax_forms() {
        for f in [
            "lower(email) = 'a@example.com' AND Upper(code) = 'X'",
            "NULLIF(a, 0) IS NULL OR ABS(b) > 1",
            "ROUND(price, 2) = 9.99 AND FLOOR(x) = CEIL(y) AND CEILING(z) = 1",
            "LENGTH(name) > 3 AND CHAR_LENGTH(name) < 10",
            "CONCAT(first, ' ', last) = 'A B'",
            "DATE(created_at) = '2024-01-01'",
            "DATE_TRUNC('day', ts) = '2024-01-01'",
            "ts > NOW() AND d <= CURRENT_DATE AND t < CURRENT_TIMESTAMP",
            "d = TO_DATE('2024-01-01', 'YYYY-MM-DD') AND TO_CHAR(d, 'YYYY') = '2024'",
            "GREATEST(a, b) > LEAST(c, d) AND MOD(id, 10) = 3",
            "CAST(x AS INT) = 1 AND x::text LIKE '%a%'",
            "TRIM(name) = 'a' AND SUBSTRING(name FROM 1 FOR 2) = 'ab'",
            "POSITION('a' IN name) > 0",
            "CASE WHEN a = 1 THEN 1 ELSE 0 END = 1",
            "LOWER(COALESCE(region, 'eu')) IN ('eu', 'us')",
        ] {
            ok(f);
        }
    }

    #[test]
    fn rejects_backtick_and_bracket_quoting() {
        for f in [
            "`x` = 1 OR `) ; DROP TABLE t ; SELECT (1` = 1",
            "`weird;name` = 'x'",
            "`id` = 1",
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::QuotedIdentifier {
                    style: "a backtick-quoted identifier (`...`)"
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(msg.contains("backtick-quoted identifier"), "{msg}");
            assert!(msg.contains("not allowed"), "{msg}");
        }
        // SQL Server reads `[a']` as an identifier, so the rest would be SQL.
        for f in ["[a] = 1", "[a'] = 1 OR 1=1 OR [b'] = 1", "tags[1] = 'x'"] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::QuotedIdentifier {
                    style: "square brackets ([...])"
                },
                "{f}"
            );
            assert!(e.to_string().contains("square brackets"), "{e}");
        }
    }

    #[test]
    fn rejects_double_quoted_identifiers_with_unusual_characters() {
        for (f, name) in [
            ("\"weird;name\" = 'x'", "weird;name"),
            ("\"a'b\" = 1", "a'b"),
            ("\"a\"\"b\" = 1", "a\"b"),
            ("\"a`b\" = 1", "a`b"),
            ("\"a-b\" = 1", "a-b"),
            ("\"a/b\" = 1", "a/b"),
            ("\"a*b\" = 1", "a*b"),
            ("\"a#b\" = 1", "a#b"),
            ("\"f(x)\" = 1", "f(x)"),
            ("\" \" = 1", " "),
            ("\"a\tb\" = 1", "a\tb"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::UnsafeQuotedIdentifier {
                    name: name.to_owned()
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(msg.contains("double-quoted identifier"), "{msg}");
            assert!(msg.contains(name), "{msg}");
        }
        assert!(matches!(
            err("\"\" = 1"),
            FilterError::UnsafeQuotedIdentifier { .. } | FilterError::Syntax { .. }
        ));
    }

    #[test]
    fn rejects_functions_outside_the_allow_list() {
        for (f, name) in [
            (
                "query_to_xml('select password from users',true,true,'')::text LIKE '%a%'",
                "query_to_xml",
            ),
            (
                "dblink_exec('dbname=x','DROP TABLE users') = 'OK'",
                "dblink_exec",
            ),
            ("pg_read_file('/etc/passwd') LIKE '%root%'", "pg_read_file"),
            ("lo_import('/etc/passwd') > 0", "lo_import"),
            (
                "set_config('role','postgres',false) IS NOT NULL",
                "set_config",
            ),
            ("pg_sleep(3600) IS NULL", "pg_sleep"),
            ("BENCHMARK(100000000,MD5('a'))=0", "BENCHMARK"),
            ("sleep(10) = 0", "sleep"),
            ("load_file('/etc/passwd') IS NOT NULL", "load_file"),
            // Hidden inside allowed functions and syntax forms.
            ("LOWER(pg_sleep(1)::text) = 'a'", "pg_sleep"),
            ("COALESCE(x, version()) = 'a'", "version"),
            ("CASE WHEN a = 1 THEN pg_sleep(5) END IS NULL", "pg_sleep"),
            ("CAST(current_setting('x') AS INT) = 1", "current_setting"),
            ("a = 1 AND b IN (1, pg_sleep(5))", "pg_sleep"),
            ("\"pg_sleep\"(1) IS NULL", "pg_sleep"),
            ("current_user = 'postgres'", "current_user"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::FunctionNotAllowed {
                    name: name.to_owned()
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "filter calls the function {name}, which is not allowed"
                )),
                "{msg}"
            );
            assert!(
                msg.contains("allowed functions: LOWER, UPPER, COALESCE"),
                "{msg}"
            );
        }
    }

    #[test]
    fn rejects_schema_qualified_functions() {
        for (f, name) in [
            ("pg_catalog.pg_sleep(1) IS NULL", "pg_catalog.pg_sleep"),
            ("pg_catalog.lower(x) = 'a'", "pg_catalog.lower"),
            ("a.lower() = 'a'", "a.lower"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::QualifiedFunction {
                    name: name.to_owned()
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(msg.contains("schema-qualified function"), "{msg}");
            assert!(msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn rejects_window_and_aggregate_clauses_on_allowed_functions() {
        let e = err("LOWER(x) OVER () = 'a'");
        assert_eq!(
            e,
            FilterError::FunctionClause {
                name: "LOWER".to_owned(),
                clause: "an OVER (...) window"
            }
        );
        assert!(e.to_string().contains("OVER"), "{e}");
        assert!(matches!(
            err("COALESCE(x) FILTER (WHERE y = 1) = 1"),
            FilterError::FunctionClause { .. }
        ));
    }

    #[test]
    fn rejects_placeholders() {
        for (f, placeholder) in [
            ("x = $1", "$1"),
            ("x = ?", "?"),
            ("x = :name", ":name"),
            ("x = $name", "$name"),
            ("LOWER(?) = 'a'", "?"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::Placeholder {
                    placeholder: placeholder.to_owned()
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(msg.contains("placeholders"), "{msg}");
            assert!(msg.contains(placeholder), "{msg}");
        }
    }

    #[test]
    fn rejects_odbc_escapes() {
        for f in [
            "{fn user()} = 'sa'",
            "d = {d '2024-01-01'}",
            "x = {fn LOWER('A')}",
        ] {
            let e = err(f);
            assert_eq!(e, FilterError::OdbcEscape, "{f}");
            assert!(e.to_string().contains("ODBC escape"), "{e}");
            assert!(e.to_string().contains("{fn ...}"), "{e}");
        }
    }

    #[test]
    fn rejects_assignment() {
        for f in ["y := 2", "a = 1 AND (y := 2) = 2"] {
            let e = err(f);
            assert_eq!(e, FilterError::Assignment, "{f}");
            assert!(e.to_string().contains("':='"), "{e}");
        }
    }

    #[test]
    fn rejects_session_and_user_variables() {
        for (f, name) in [
            ("@@version LIKE '8%'", "@@version"),
            ("x = @@version", "@@version"),
            ("@x = 1", "@x"),
            ("a = 1 AND b = @x", "@x"),
            ("a@b = 1", "a@b"),
        ] {
            let e = err(f);
            assert_eq!(
                e,
                FilterError::Variable {
                    name: name.to_owned()
                },
                "{f}"
            );
            let msg = e.to_string();
            assert!(msg.contains("session or user variables"), "{msg}");
            assert!(msg.contains(name), "{msg}");
        }
    }

    /// The AST walk rejects sub-queries on its own, independently of the
    /// keyword scan that normally catches them first.
    #[test]
    fn ast_walk_rejects_subqueries() {
        for (f, kw) in [
            ("EXISTS (SELECT 1)", "EXISTS"),
            ("x IN (SELECT id FROM t)", "IN (SELECT ...)"),
            ("(SELECT 1) = 1", "SELECT"),
            ("x = ANY(SELECT id FROM t)", "SELECT"),
            ("ARRAY(SELECT 1) IS NOT NULL", "SELECT"),
            (
                "LOWER((WITH a AS (SELECT 1) SELECT * FROM a)) = 'a'",
                "WITH",
            ),
        ] {
            let expr = Parser::new(&GenericDialect)
                .try_with_sql(f)
                .and_then(|mut p| p.parse_expr())
                .unwrap_or_else(|e| panic!("{f}: {e}"));
            let e = check_ast(&expr).unwrap_err();
            assert_eq!(
                e,
                FilterError::Subquery {
                    keyword: kw.to_owned()
                },
                "{f}"
            );
            assert!(e.to_string().contains("sub-quer"), "{e}");
        }
    }

    #[test]
    fn deep_chains_inside_function_calls_do_not_overflow_the_stack() {
        // The AST walk recurses once per nesting level; the longest chains
        // that fit in MAX_FILTER_LEN must be walked on half of a default
        // (2 MiB) thread stack.
        let chains = [
            format!("LOWER({}a) = 'a'", "a||".repeat(1350)),
            format!("COALESCE({}a, 1) = 1", "a+".repeat(2030)),
            format!("{}a = 1", "a+".repeat(2040)),
        ];
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                for f in &chains {
                    assert!(f.len() <= MAX_FILTER_LEN, "{}", f.len());
                    ok(f);
                }
                assert_eq!(
                    err(&format!("LOWER({}pg_sleep(1)) = 'a'", "a+".repeat(2030))),
                    FilterError::FunctionNotAllowed {
                        name: "pg_sleep".to_owned()
                    }
                );
            })
            .unwrap()
            .join()
            .unwrap();
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

    // ---- Cross-dialect reading, boolean-typed conditions, control characters ----

    use proptest::prelude::*;
    use sqlparser::dialect::dialect_from_str;

    /// Every name `sqlparser::dialect::dialect_from_str` accepts in sqlparser
    /// 0.63, one per dialect (the aliases `postgres` and `sparksql` left out).
    const DIALECT_NAMES: &[&str] = &[
        "generic",
        "postgresql",
        "mysql",
        "snowflake",
        "bigquery",
        "mssql",
        "sqlite",
        "oracle",
        "redshift",
        "databricks",
        "spark",
        "hive",
        "clickhouse",
        "duckdb",
        "teradata",
        "ansi",
    ];

    fn every_dialect() -> Vec<(&'static str, Box<dyn Dialect>)> {
        DIALECT_NAMES
            .iter()
            .map(|&name| {
                let dialect =
                    dialect_from_str(name).unwrap_or_else(|| panic!("unknown dialect {name}"));
                (name, dialect)
            })
            .collect()
    }

    /// How one dialect's tokenizer reads a filter, reduced to what matters
    /// for injection.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Reading {
        /// Comment prefixes (`--`, `#`, `//`, `/*`).
        comments: Vec<String>,
        semicolons: usize,
        placeholders: Vec<String>,
        /// String literals and quoted identifiers, in order.
        quoted: Vec<String>,
    }

    /// Tokenizes `filter` with `dialect`; `Err` with the tokenizer's message
    /// when it cannot.
    fn read(dialect: &dyn Dialect, filter: &str) -> Result<Reading, String> {
        let tokens = Tokenizer::new(dialect, filter)
            .tokenize()
            .map_err(|e| e.to_string())?;
        let mut reading = Reading::default();
        for token in &tokens {
            match token {
                Token::Whitespace(Whitespace::SingleLineComment { prefix, .. }) => {
                    reading.comments.push(prefix.clone());
                }
                Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                    reading.comments.push("/*".to_owned());
                }
                Token::SemiColon => reading.semicolons += 1,
                Token::Placeholder(p) => reading.placeholders.push(p.clone()),
                _ => {
                    if let Some(text) = quoted_text(token) {
                        reading.quoted.push(text.to_owned());
                    }
                }
            }
        }
        Ok(reading)
    }

    /// The dialects (by `dialect_from_str` name) that read `filter` unsafely:
    /// their tokenizer fails, or sees a comment, `;` or placeholder, or quoted
    /// text other than the generic tokenizer's.
    fn unsafe_readings(filter: &str) -> Vec<&'static str> {
        let generic = read(&GenericDialect, filter).ok();
        every_dialect()
            .into_iter()
            .filter(
                |(_, dialect)| match (read(dialect.as_ref(), filter), &generic) {
                    (Ok(r), Some(g)) => {
                        !r.comments.is_empty()
                            || r.semicolons > 0
                            || !r.placeholders.is_empty()
                            || r.quoted != g.quoted
                    }
                    _ => true,
                },
            )
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn dialect_list_covers_every_sqlparser_dialect() {
        use std::any::TypeId;
        use std::collections::BTreeSet;

        let from_names: BTreeSet<TypeId> = every_dialect()
            .iter()
            .map(|(_, dialect)| dialect.dialect())
            .collect();
        assert_eq!(from_names.len(), DIALECT_NAMES.len(), "duplicate names");
        // The aliases resolve to dialects already in the list.
        for alias in ["postgres", "sparksql"] {
            let dialect = dialect_from_str(alias).unwrap();
            assert!(from_names.contains(&dialect.dialect()), "{alias}");
        }

        let checked: BTreeSet<TypeId> = DIALECTS
            .iter()
            .map(|(_, dialect)| dialect.dialect())
            .chain([GenericDialect.dialect()])
            .collect();
        assert_eq!(checked.len(), DIALECTS.len() + 1, "duplicate in DIALECTS");
        assert_eq!(checked, from_names);

        let names: BTreeSet<&str> = DIALECTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), DIALECTS.len(), "duplicate display name");
    }

    #[test]
    fn quoted_text_covers_every_string_literal_syntax() {
        for (dialect, f) in [
            ("generic", "'q'"),
            ("generic", "N'q'"),
            ("generic", "X'q'"),
            ("generic", "E'q'"),
            ("generic", "U&'q'"),
            ("generic", "b'q'"),
            ("generic", "r'q'"),
            ("generic", "q'[q]'"),
            ("generic", "nq'[q]'"),
            ("generic", "\"q\""),
            ("generic", "`q`"),
            ("postgresql", "$$q$$"),
            ("postgresql", "$t$q$t$"),
            ("mysql", "\"q\""),
            ("bigquery", "'''q'''"),
            ("bigquery", "\"\"\"q\"\"\""),
            ("bigquery", "b'''q'''"),
            ("bigquery", "r\"q\""),
            ("mssql", "[q]"),
        ] {
            let dialect = dialect_from_str(dialect).unwrap();
            let reading = read(dialect.as_ref(), f).unwrap();
            assert_eq!(reading.quoted, ["q"], "{f}");
        }
    }

    /// What a case of [`every_escape_and_every_dialect`] expects.
    enum Expect {
        Accepted,
        Refused(FilterError),
        /// Refused with [`FilterError::NotCondition`] at `place`, with `got`
        /// containing the fragment.
        NotCondition(&'static str, &'static str),
        /// Refused with a message containing the fragment.
        RefusedWith(&'static str),
    }

    /// The escapes found by the attack review and the constructs that were
    /// already refused, each with the dialects (by `dialect_from_str` name)
    /// whose tokenizer reads it unsafely; and normal filters, which every
    /// dialect must read safely.
    #[test]
    fn every_escape_and_every_dialect() {
        use Expect::*;
        let comment = |marker: &str, dialect: &'static str| {
            Refused(FilterError::DialectComment {
                marker: marker.to_owned(),
                dialect,
            })
        };
        let control = |code: &str, position: usize| {
            Refused(FilterError::ControlCharacter {
                code: code.to_owned(),
                position,
            })
        };
        let placeholder = |p: &str| {
            Refused(FilterError::Placeholder {
                placeholder: p.to_owned(),
            })
        };
        let literal = |kind: &'static str| Refused(FilterError::UnsupportedLiteral { kind });
        let subquery = |keyword: &str| {
            Refused(FilterError::Subquery {
                keyword: keyword.to_owned(),
            })
        };
        let whole = "the whole filter";
        const ALL: &[&str] = DIALECT_NAMES;

        let cases: Vec<(&str, Expect, &[&str])> = vec![
            // Normal filters: accepted, and read safely by every dialect.
            ("USER_id = 123", Accepted, &[]),
            ("region IN ('EU', 'US') AND tenant_id = 42", Accepted, &[]),
            ("name = 'it''s'", Accepted, &[]),
            ("created_at >= DATE '2024-01-01'", Accepted, &[]),
            ("lower(email) LIKE '%@example.com'", Accepted, &[]),
            ("a IS NOT NULL", Accepted, &[]),
            ("x BETWEEN 1 AND 10", Accepted, &[]),
            ("(a = 1 OR b = 2) AND c <> 3", Accepted, &[]),
            ("NOT (a = 1)", Accepted, &[]),
            ("amount / 2 > 10", Accepted, &[]),
            (
                "a != 1 AND b < 2 AND c <= 3 AND d > 4 AND e >= 5",
                Accepted,
                &[],
            ),
            (
                "name NOT ILIKE 'a%' AND x NOT BETWEEN 1 AND 2",
                Accepted,
                &[],
            ),
            ("a NOT IN (1, 2) AND b IS NULL", Accepted, &[]),
            (
                "a IS TRUE OR b IS NOT FALSE OR c IS FALSE OR d IS NOT TRUE",
                Accepted,
                &[],
            ),
            ("NOT NOT ((a = 1))", Accepted, &[]),
            ("\"User Id\" = 1", Accepted, &[]),
            ("url LIKE 'https://%'", Accepted, &[]),
            ("note = 'a;b -- c /* d */ # e // f $1 ? :x'", Accepted, &[]),
            ("a = 1\n  AND b = 2\r\n\tOR c = 3", Accepted, &[]),
            // Review hole 1: Snowflake reads `//` as a line comment.
            (
                "tenant_id = 42 // (0\n) OR (1=1 // 0)\nAND 1=1",
                comment("//", "Snowflake"),
                &["snowflake"],
            ),
            (
                "amount // 2 > 10",
                comment("//", "Snowflake"),
                &["snowflake"],
            ),
            // Review hole 2: not one boolean expression.
            ("WHERE", NotCondition(whole, "`WHERE`"), &[]),
            ("NOT", NotCondition(whole, "`NOT`"), &[]),
            ("EXPLAIN", NotCondition(whole, "`EXPLAIN`"), &[]),
            (
                "a = 1 AND 1",
                NotCondition("the right side of AND", "a number literal"),
                &[],
            ),
            (
                "a = 1 AND 'x'",
                NotCondition("the right side of AND", "a string literal"),
                &[],
            ),
            (
                "a = 1 OR b",
                NotCondition("the right side of OR", "`b`"),
                &[],
            ),
            (
                "b OR a = 1",
                NotCondition("the left side of OR", "`b`"),
                &[],
            ),
            (
                "NOT 1",
                NotCondition("the operand of NOT", "a number literal"),
                &[],
            ),
            (
                "(a = 1) AND (NULL)",
                NotCondition("the right side of AND", "NULL"),
                &[],
            ),
            ("active", NotCondition(whole, "`active`"), &[]),
            ("TRUE", NotCondition(whole, "TRUE"), &[]),
            ("lower(email)", NotCondition(whole, "function lower"), &[]),
            ("a + 1", NotCondition(whole, "`a + 1`"), &[]),
            // Review hole 3: control characters.
            ("a = 'x\u{0}y'", control("U+0000", 7), &[]),
            ("a = 1\u{0} OR 1 = 1", control("U+0000", 6), &[]),
            ("a = 1 AND\u{b}b = 2", control("U+000B", 10), &[]),
            ("a = '\u{1b}[2J'", control("U+001B", 6), &[]),
            ("a = 1\u{7f}", control("U+007F", 6), &[]),
            ("a = 1\u{85}AND b = 2", control("U+0085", 6), &[]),
            // Already refused before; must stay refused.
            (
                "1=1; DROP TABLE users",
                Refused(FilterError::StatementSeparator),
                ALL,
            ),
            (
                "a = 1 -- x",
                Refused(FilterError::Comment { marker: "'--'" }),
                ALL,
            ),
            (
                "a = 1 /* x */",
                Refused(FilterError::Comment {
                    marker: "'/* ... */'",
                }),
                ALL,
            ),
            (
                "a = 1 /*! OR 1=1 */",
                Refused(FilterError::Comment {
                    marker: "'/*! ... */'",
                }),
                &["postgresql", "snowflake", "mssql"],
            ),
            (
                "a = 1 # x",
                Refused(FilterError::Comment { marker: "'#'" }),
                &["mysql", "snowflake", "bigquery", "hive"],
            ),
            ("a = $$x$$", literal("dollar-quoted string $$...$$"), &[]),
            ("a = E'x'", literal("escape string E'...'"), &[]),
            ("a = U&'x'", literal("Unicode escape string U&'...'"), &[]),
            (
                "a = q'[x]'",
                literal("quote-delimited string q'[...]'"),
                &["postgresql", "mysql"],
            ),
            (
                "`a` = 1",
                Refused(FilterError::QuotedIdentifier {
                    style: "a backtick-quoted identifier (`...`)",
                }),
                &[],
            ),
            (
                "[a'] = 1 OR 1=1 OR [b'] = 1",
                Refused(FilterError::QuotedIdentifier {
                    style: "square brackets ([...])",
                }),
                &["mssql"],
            ),
            ("{fn user()} = 'sa'", Refused(FilterError::OdbcEscape), &[]),
            ("a = $1", placeholder("$1"), &["postgresql"]),
            ("a = ?", placeholder("?"), &[]),
            ("a = :x", placeholder(":x"), &[]),
            ("a IN (SELECT id FROM t)", subquery("SELECT"), &[]),
            ("EXISTS (SELECT 1)", subquery("SELECT"), &[]),
            ("LOWER((SELECT name FROM u)) = 'a'", subquery("SELECT"), &[]),
            (
                "name = '\\' OR 1=1 OR name = '\\'",
                Refused(FilterError::Backslash),
                &["mysql", "bigquery"],
            ),
            // Found by the cross-dialect comparison alone.
            (
                "a = '''x'''",
                RefusedWith("BigQuery reads its quoted text differently"),
                &["bigquery"],
            ),
            (
                "a = '''' OR 1 = 1",
                RefusedWith("cannot be read by the BigQuery SQL tokenizer"),
                &["bigquery"],
            ),
            (
                "a$b = 1",
                Refused(FilterError::DialectPlaceholder {
                    placeholder: "$b".to_owned(),
                    dialect: "BigQuery",
                }),
                &["bigquery"],
            ),
        ];

        for (f, expect, hazardous_in) in cases {
            let unsafe_in = unsafe_readings(f);
            for dialect in hazardous_in {
                assert!(
                    unsafe_in.contains(dialect),
                    "{f:?}: expected {dialect} to read it unsafely; unsafe in {unsafe_in:?}"
                );
            }
            match expect {
                Accepted => {
                    ok(f);
                    assert_eq!(unsafe_in, Vec::<&str>::new(), "{f:?}");
                }
                Refused(expected) => assert_eq!(err(f), expected, "{f:?}"),
                NotCondition(place, got) => {
                    let e = err(f);
                    assert!(
                        matches!(&e, FilterError::NotCondition { place: p, got: g }
                            if *p == place && g.contains(got)),
                        "{f:?}: {e:?}"
                    );
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("{place} must be a condition such as `x = 1`")),
                        "{msg}"
                    );
                    assert!(msg.contains(got), "{msg}");
                }
                RefusedWith(fragment) => {
                    let msg = err(f).to_string();
                    assert!(msg.contains(fragment), "{f:?}: {msg}");
                }
            }
        }
    }

    #[test]
    fn error_messages_name_the_problem_and_the_dialect() {
        let msg = err("tenant_id = 42 // (0\n) OR (1=1 // 0)\nAND 1=1").to_string();
        assert!(
            msg.starts_with("filter must not contain '//': Snowflake reads it as a comment"),
            "{msg}"
        );
        let msg = err("a = 1 AND 1").to_string();
        assert!(
            msg.contains("the right side of AND must be a condition such as `x = 1`"),
            "{msg}"
        );
        assert!(msg.ends_with("got a number literal"), "{msg}");
        let msg = err("a = 'x\u{0}'").to_string();
        assert!(msg.contains("control characters such as NUL"), "{msg}");
        assert!(msg.contains("U+0000 at character 7"), "{msg}");
        let msg = err("a$b = 1").to_string();
        assert!(
            msg.contains("$b: BigQuery reads it as a bind-parameter placeholder"),
            "{msg}"
        );
        let msg = err("a = '''x'''").to_string();
        assert!(msg.contains("it reads the quoted text `x`"), "{msg}");
        assert!(msg.contains("standard SQL reads `'x'`"), "{msg}");
    }

    /// The cross-dialect check refuses, on its own, what the generic token
    /// checks refuse first: the two are independent layers.
    #[test]
    fn dialect_check_alone_refuses_comments_separators_placeholders_and_quoting() {
        let check = |f: &str| {
            let tokens = Tokenizer::new(&GenericDialect, f)
                .tokenize_with_location()
                .unwrap();
            check_dialects(f, &tokens).unwrap_err()
        };
        assert_eq!(
            check("a = 1; b = 2"),
            FilterError::DialectStatementSeparator {
                dialect: "PostgreSQL"
            }
        );
        assert_eq!(
            check("a = 1 -- x"),
            FilterError::DialectComment {
                marker: "--".to_owned(),
                dialect: "PostgreSQL"
            }
        );
        assert_eq!(
            check("a = 1 /* x */"),
            FilterError::DialectComment {
                marker: "/*".to_owned(),
                dialect: "PostgreSQL"
            }
        );
        assert_eq!(
            check("a = 1 # x"),
            FilterError::DialectComment {
                marker: "#".to_owned(),
                dialect: "MySQL"
            }
        );
        assert_eq!(
            check("a = $1"),
            FilterError::DialectPlaceholder {
                placeholder: "$1".to_owned(),
                dialect: "PostgreSQL"
            }
        );
        let e = check("[a'] = 1 OR 1=1 OR [b'] = 1");
        assert!(
            matches!(
                &e,
                FilterError::DialectQuoting {
                    dialect: "SQL Server",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("quoted ambiguously"), "{e}");
        // MySQL reads `\'` inside a string as an escaped quote, so it pairs
        // the quotes differently: 'A\'B' C 'D\'E' against 'A\' B 'C' D \ 'E'.
        let e = check("'A\\'B'C'D\\'E'");
        assert!(
            matches!(
                &e,
                FilterError::DialectQuoting {
                    dialect: "MySQL",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// Fragments for [`accepted_filters_read_the_same_in_every_dialect`]:
    /// words, numbers, quotes, comment and operator characters, whitespace.
    const FRAGMENTS: &[&str] = &[
        "a",
        "tenant_id",
        "x1",
        "1",
        "42",
        "0.5",
        "'",
        "''",
        "'''",
        "\"",
        "\"a\"",
        "`",
        "/",
        "//",
        "-",
        "--",
        "*",
        "/*",
        "*/",
        "#",
        "$",
        "$$",
        "$1",
        ";",
        "\n",
        "\r",
        "\t",
        " ",
        "  ",
        "=",
        "<>",
        "<",
        ">=",
        "(",
        ")",
        ",",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "IS",
        "NULL",
        "BETWEEN",
        "SELECT",
        "WHERE",
        "E",
        "N",
        "q",
        "[",
        "]",
        "{",
        "}",
        ":",
        "?",
        "@",
        ".",
        "|",
        "||",
        "%",
        "!",
        "&",
        "+",
        "'x'",
        "'a;b'",
        "'--'",
        "'/*'",
        "'//'",
        "'#'",
        "lower(a)",
        "\u{0}",
    ];

    fn fragment() -> impl Strategy<Value = String> {
        proptest::sample::select(FRAGMENTS).prop_map(str::to_owned)
    }

    /// A value: a word, a number or a string literal whose content is made of
    /// fragments (so it may contain quotes that end it early).
    fn operand() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(&["a", "tenant_id", "\"User Id\"", "lower(a)"][..])
                .prop_map(str::to_owned),
            (0u32..1000).prop_map(|n| n.to_string()),
            proptest::collection::vec(fragment(), 0..3)
                .prop_map(|parts| format!("'{}'", parts.concat())),
        ]
    }

    /// `operand (op operand)*` with operators that include `/`, `//`, `-`,
    /// `--`, `*`, `#`, `||`, and separators that include newlines.
    fn value() -> impl Strategy<Value = String> {
        let op = prop_oneof![
            3 => proptest::sample::select(&["/", " / ", "-", "*", "||", "+", "%"][..]),
            1 => proptest::sample::select(&["//", "/ /", "--", "/*", "*/", "#", "- -", "'"][..]),
        ];
        let sep = proptest::sample::select(&[" ", "", "\n", "\r\n", " \n"][..]);
        (
            operand(),
            proptest::collection::vec((sep.clone(), op, sep, operand()), 0..3),
        )
            .prop_map(|(first, rest)| {
                let mut s = first;
                for (a, op, b, operand) in rest {
                    s.push_str(a);
                    s.push_str(op);
                    s.push_str(b);
                    s.push_str(&operand);
                }
                s
            })
    }

    /// `value cmp value`.
    fn condition() -> impl Strategy<Value = String> {
        let cmp = proptest::sample::select(&[" = ", " <> ", " < ", " >= ", " LIKE "][..]);
        (value(), cmp, value()).prop_map(|(l, c, r)| format!("{l}{c}{r}"))
    }

    /// Conditions joined by AND / OR, sometimes with a fragment spliced in
    /// somewhere; or just fragments.
    fn filter() -> impl Strategy<Value = String> {
        let join = proptest::sample::select(&[" AND ", " OR ", "\nAND ", " AND NOT "][..]);
        let structured = (
            condition(),
            proptest::collection::vec((join, condition()), 0..3),
            proptest::option::weighted(0.3, (any::<proptest::sample::Index>(), fragment())),
        )
            .prop_map(|(first, rest, splice)| {
                let mut s = first;
                for (join, condition) in rest {
                    s.push_str(join);
                    s.push_str(&condition);
                }
                if let Some((at, fragment)) = splice {
                    let boundaries: Vec<usize> =
                        (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
                    s.insert_str(*at.get(&boundaries), &fragment);
                }
                s
            });
        let random = proptest::collection::vec(fragment(), 1..16).prop_map(|parts| parts.concat());
        prop_oneof![5 => structured, 1 => random]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the validator accepts, every dialect's tokenizer reads
        /// without error, comment, `;` or placeholder, and with the same
        /// quoted text (string literals and quoted identifiers) as the
        /// generic tokenizer. (MySQL and BigQuery read the double-quoted
        /// identifier `"a"` as the string literal 'a': same quoted text, so
        /// it counts as the same.)
        #[test]
        fn accepted_filters_read_the_same_in_every_dialect(f in filter()) {
            if validate_filter(&f).is_ok() {
                let generic = read(&GenericDialect, &f).unwrap();
                prop_assert!(generic.comments.is_empty() && generic.semicolons == 0);
                for (name, dialect) in every_dialect() {
                    let reading = read(dialect.as_ref(), &f);
                    prop_assert!(reading.is_ok(), "{name} cannot tokenize {f:?}: {reading:?}");
                    let reading = reading.unwrap();
                    prop_assert_eq!(&reading.comments, &Vec::<String>::new(), "{} {:?}", name, f);
                    prop_assert_eq!(reading.semicolons, 0, "{} {:?}", name, f);
                    prop_assert_eq!(&reading.placeholders, &Vec::<String>::new(), "{} {:?}", name, f);
                    prop_assert_eq!(&reading.quoted, &generic.quoted, "{} {:?}", name, f);
                }
                prop_assert!(!f.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')));
            }
        }
    }
}

//! Stage 4: every other dialect's tokenizer must read the filter as the generic one does.

use sqlparser::dialect::{
    AnsiDialect, BigQueryDialect, ClickHouseDialect, DatabricksDialect, Dialect, DuckDbDialect,
    HiveDialect, MsSqlDialect, MySqlDialect, OracleDialect, PostgreSqlDialect, RedshiftSqlDialect,
    SQLiteDialect, SnowflakeDialect, SparkSqlDialect, TeradataDialect,
};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use super::{FilterError, snippet};

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
pub(super) fn check_dialects(filter: &str, tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
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
pub(super) fn quoted_text(token: &Token) -> Option<&str> {
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

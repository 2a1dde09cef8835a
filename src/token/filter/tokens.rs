//! Stages 2 and 3: the scan of the generic tokenizer's tokens (quoting, comments, placeholders,
//! and the keywords that start a query).

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use super::{FilterError, snippet};

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
pub(super) fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
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
pub(super) fn check_keywords(tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
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

use super::dialects::quoted_text;
use super::*;
use sqlparser::dialect::Dialect;
use sqlparser::tokenizer::Whitespace;

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

//! Stages 6 and 7: the walk of the parsed expression (allowed functions, no sub-query) and the
//! check that it is a condition.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArguments, ObjectNamePart, Query, SetExpr,
    UnaryOperator, Value, ValueWithSpan, Visit, Visitor,
};

use super::{ALLOWED_FUNCTIONS, FilterError, snippet};

/// Walks the parsed expression (with sqlparser's derived [`Visit`], so no
/// variant, function argument or window clause is skipped) and rejects
/// function calls outside [`ALLOWED_FUNCTIONS`], schema-qualified calls,
/// sub-queries, placeholders and assignments.
pub(super) fn check_ast(expr: &Expr) -> Result<(), FilterError> {
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
pub(super) fn check_not_literal(expr: &Expr) -> Result<(), FilterError> {
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
pub(super) fn check_condition(expr: &Expr) -> Result<(), FilterError> {
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

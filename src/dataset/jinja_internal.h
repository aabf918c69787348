// Why: the parts of the Jinja interpreter shared by its two sources: jinja.cpp (lexer, parser, evaluator) and
// jinja_builtins.cpp (Python semantics of values: attribute and item access, operators, filters, tests, methods).
#pragma once

#include <string>
#include <string_view>

#include "dataset/jinja.h"

namespace moetune::jinja::detail {

// An error raised while evaluating; the evaluator adds the template name and line.
struct EvalError {
  std::string message;
};

[[noreturn]] void eval_fail(std::string message);

// Python str.isspace() for one code point.
bool py_isspace(char32_t c);
std::u32string code_points(std::string_view text);
std::string from_code_points(const std::u32string& text);
// Python repr(float).
std::string py_float_repr(double value);

// obj.name with Jinja's getattr-then-getitem fallback; missing -> Undefined (Undefined.name -> error).
Value get_attribute(const Value& object, const std::string& name);
// obj[key] with Jinja's getitem-then-getattr fallback.
Value get_item(const Value& object, const Value& key);
// obj[start:stop:step] (each may be Undefined = omitted).
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// Binary operators ("+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", "<=", ">", ">=", "in").
Value binary_op(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& a);
// The items a for loop walks (strings: characters, dicts: keys, Undefined: none).
List iterate(const Value& value);
// len() as the length filter computes it.
int64_t length_of(const Value& value);

Value apply_filter(const std::string& name, const Value& value, CallArgs& args);
bool apply_test(const std::string& name, const Value& value, CallArgs& args);
bool has_filter(const std::string& name);
bool has_test(const std::string& name);

// The globals every render sees: range, namespace, dict, raise_exception, strftime_now.
Value lookup_global(const std::string& name);

}  // namespace moetune::jinja::detail

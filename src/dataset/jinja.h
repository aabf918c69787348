// Why: chat data must be rendered with the model's own chat template exactly as Transformers' apply_chat_template
// renders it (a different space or newline is a different token sequence than the one the model was tuned on), with no
// Python at run time. This is the subset of Jinja2 those templates use, with Transformers' environment settings:
//   - trim_blocks and lstrip_blocks on, `{%-`/`-%}`/`{{-`/`-}}`/`{#-`/`-#}`/`{%+` whitespace control, one trailing
//     newline of the template dropped, \r\n and \r read as \n (Jinja's lexer);
//   - statements: if/elif/else, for (tuple targets, `if` filter, else, loop.index/index0/first/last/length/revindex/
//     previtem/nextitem, break/continue), set (names, tuples, `ns.attr` of a namespace(), block set), macro (positional
//     and keyword arguments with defaults), generation/endgeneration (Transformers' assistant-mask extension);
//   - expressions: literals, lists, dicts, tuples, attribute/item access with Jinja's fallbacks, slices, calls,
//     filters, tests (`is [not] ...`), and/or/not, comparisons, in/not in, + - * / // % ** ~, `a if b else c`;
//   - Python semantics where Jinja defers to Python: str()/repr() of values, string methods (strip, split, startswith,
//     replace, ...), dict methods (items, keys, values, get), truthiness, int/float arithmetic, indexing and slicing by
//     code point; Jinja's Undefined (printing "", false, iterable and empty, an error on arithmetic and attribute
//     access); Transformers' globals raise_exception and strftime_now and its tojson (json.dumps, ensure_ascii=False).
// Anything outside the subset (an unknown statement, filter, test or method) is a TemplateError naming the template and
// the line, at parse time when the syntax is unknown and at render time for unknown filters/tests/methods.
//
// Differences from Python that these templates do not reach: integers are 64-bit, upper/lower/title/capitalize change
// ASCII letters only, `%` string formatting and the `format` filter are not supported.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace moetune::jinja {

// A template that cannot be parsed or rendered (message: "<template name>:<line>: ...").
class TemplateError : public Error {
 public:
  using Error::Error;
};

// raise_exception(message) called by the template (usually: the conversation breaks the template's rules).
class RaisedError : public TemplateError {
 public:
  using TemplateError::TemplateError;
};

class Value;
struct Dict;
struct CallArgs;
using List = std::vector<Value>;
using Function = std::function<Value(CallArgs&)>;

class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

  Value() = default;  // Undefined
  static Value undefined(std::string hint) {
    Value v;
    v.text_ = std::move(hint);
    return v;
  }
  static Value none() { return Value(Kind::None); }
  static Value boolean(bool b) {
    Value v(Kind::Bool);
    v.int_ = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v(Kind::Int);
    v.int_ = i;
    return v;
  }
  static Value number(double f) {
    Value v(Kind::Float);
    v.float_ = f;
    return v;
  }
  static Value string(std::string s) {
    Value v(Kind::String);
    v.text_ = std::move(s);
    return v;
  }
  static Value list(List items, bool tuple = false);
  static Value dict(std::shared_ptr<Dict> dict);
  static Value empty_dict();
  static Value namespace_object(std::shared_ptr<Dict> attributes);
  static Value function(Function f, std::string name);
  // JSON (objects keep their key order; integers stay integers).
  static Value from_json(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_tuple() const { return kind_ == Kind::List && tuple_; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_float() const { return kind_ == Kind::Float ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return text_; }   // String; for Undefined: the hint
  const List& as_list() const { return *list_; }
  Dict& as_dict() const { return *dict_; }                  // Dict and Namespace
  const Function& as_function() const { return *function_; }
  const std::string& function_name() const { return text_; }
  const std::shared_ptr<Dict>& dict_ptr() const { return dict_; }

  // Python truthiness (Undefined is false).
  bool truthy() const;
  // Python str(): what {{ value }} prints ("" for Undefined, "None", "True", repr for containers).
  std::string str() const;
  // Python repr().
  std::string repr() const;
  // Python's json.dumps(value, ensure_ascii=False, indent=..., sort_keys=...) (Transformers' tojson filter).
  std::string to_json(int indent = -1, bool sort_keys = false) const;
  // Jinja's type name for error messages ("str", "dict", "NoneType", ...).
  std::string type_name() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::Undefined;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::string text_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> function_;
};

// A Python dict: insertion-ordered (small; looked up by scanning).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  // Positional argument `index`, or keyword `name`, or `fallback` when neither was given.
  Value get(size_t index, const char* name, Value fallback = Value()) const;
  bool has(size_t index, const char* name) const;
};

// Python equality (1 == 1.0 == True, lists and dicts by value; Undefined equals only Undefined).
bool equal(const Value& a, const Value& b);

// Output span of a {% generation %} block: [begin, end) byte offsets into the rendered text.
struct GenerationSpan {
  size_t begin, end;
};

class Template {
 public:
  // Parses `source`; `name` prefixes every error ("tokenizer_config.json chat_template").
  static Template parse(std::string_view source, std::string name);

  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  ~Template();

  // Renders with `variables` (a Dict value: name -> value; the globals range, namespace, dict, raise_exception and
  // strftime_now are always there). When `spans` is given, the output ranges of {% generation %} blocks are appended.
  // Thread-safe: a parsed Template is immutable.
  std::string render(const Value& variables, std::vector<GenerationSpan>* spans = nullptr) const;

  const std::string& name() const;
  bool has_generation_blocks() const;

 private:
  struct Impl;
  explicit Template(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetune::jinja

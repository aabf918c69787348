// Why: see jinja.h. This file is the Python half of the interpreter: what values print as, how they compare and
// combine, and the filters, tests and methods chat templates call, each written to give what CPython + Jinja2 give.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>

#include "dataset/jinja_internal.h"
#include "tokenizer/utf8.h"

namespace moetune::jinja {

using detail::eval_fail;

// --- Value ----------------------------------------------------------------------------------------------------------

Value Value::list(List items, bool tuple) {
  Value v(Kind::List);
  v.list_ = std::make_shared<List>(std::move(items));
  v.tuple_ = tuple;
  return v;
}

Value Value::dict(std::shared_ptr<Dict> dict) {
  Value v(Kind::Dict);
  v.dict_ = std::move(dict);
  return v;
}

Value Value::empty_dict() { return dict(std::make_shared<Dict>()); }

Value Value::namespace_object(std::shared_ptr<Dict> attributes) {
  Value v(Kind::Namespace);
  v.dict_ = std::move(attributes);
  return v;
}

Value Value::function(Function f, std::string name) {
  Value v(Kind::Function);
  v.function_ = std::make_shared<Function>(std::move(f));
  v.text_ = std::move(name);
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return integer(static_cast<int64_t>(u));
      return number(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return number(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = std::make_shared<Dict>();
      d->items.reserve(json.size());
      for (auto it = json.begin(); it != json.end(); ++it) d->items.emplace_back(string(it.key()), from_json(it.value()));
      return dict(std::move(d));
    }
    default: return none();
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool:
    case Kind::Int: return int_ != 0;
    case Kind::Float: return float_ != 0.0;
    case Kind::String: return !text_.empty();
    case Kind::List: return !list_->empty();
    case Kind::Dict: return !dict_->items.empty();
    case Kind::Namespace:
    case Kind::Function: return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return tuple_ ? "tuple" : "list";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Function: return "builtin_function_or_method";
  }
  return "object";
}

namespace {

std::string python_string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  size_t at = 0;
  static const char* hex = "0123456789abcdef";
  while (at < s.size()) {
    const size_t start = at;
    const char32_t c = utf8::next(s, at);
    if (c == static_cast<char32_t>(quote) || c == U'\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == U'\n') {
      out += "\\n";
    } else if (c == U'\r') {
      out += "\\r";
    } else if (c == U'\t') {
      out += "\\t";
    } else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) {
      out += "\\x";
      out += hex[(c >> 4) & 15];
      out += hex[c & 15];
    } else if (c == 0x2028 || c == 0x2029 || (c >= 0x200b && c <= 0x200f) || c == 0xfeff) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += hex[(c >> shift) & 15];
    } else {
      out.append(s, start, at - start);
    }
  }
  out += quote;
  return out;
}

void json_string(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

std::string json_float(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f > 0 ? "Infinity" : "-Infinity";
  return detail::py_float_repr(f);
}

void json_dump(std::string& out, const Value& v, int indent, bool sort_keys, int depth) {
  auto newline = [&](int level) {
    out += '\n';
    out.append(static_cast<size_t>(indent * level), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: out += json_float(v.as_float()); return;
    case Value::Kind::String: json_string(out, v.as_string()); return;
    case Value::Kind::List: {
      const List& items = v.as_list();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(depth + 1);
        json_dump(out, items[i], indent, sort_keys, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [key, value] : v.as_dict().items) {
        std::string name;
        switch (key.kind()) {
          case Value::Kind::String: name = key.as_string(); break;
          case Value::Kind::None: name = "null"; break;
          case Value::Kind::Bool: name = key.as_bool() ? "true" : "false"; break;
          case Value::Kind::Int: name = std::to_string(key.as_int()); break;
          case Value::Kind::Float: name = json_float(key.as_float()); break;
          default: eval_fail(str("tojson: keys must be str, int, float, bool or None, not ", key.type_name()));
        }
        entries.emplace_back(std::move(name), &value);
      }
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (sort_keys)
        std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(depth + 1);
        json_string(out, entries[i].first);
        out += ": ";
        json_dump(out, *entries[i].second, indent, sort_keys, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
    default: eval_fail(str("tojson: Object of type ", v.type_name(), " is not JSON serializable"));
  }
}

}  // namespace

std::string Value::repr() const {
  switch (kind_) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return int_ ? "True" : "False";
    case Kind::Int: return std::to_string(int_);
    case Kind::Float: return detail::py_float_repr(float_);
    case Kind::String: return python_string_repr(text_);
    case Kind::List: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].repr();
      }
      if (tuple_ && list_->size() == 1) out += ",";
      out += tuple_ ? ")" : "]";
      return out;
    }
    case Kind::Dict: {
      std::string out = "{";
      for (size_t i = 0; i < dict_->items.size(); ++i) {
        if (i > 0) out += ", ";
        out += dict_->items[i].first.repr() + ": " + dict_->items[i].second.repr();
      }
      return out + "}";
    }
    case Kind::Namespace: return "<Namespace " + Value::dict(dict_).repr() + ">";
    case Kind::Function: return "<built-in method " + text_ + ">";
  }
  return "";
}

std::string Value::str() const {
  if (kind_ == Kind::String) return text_;
  return repr();
}

std::string Value::to_json(int indent, bool sort_keys) const {
  std::string out;
  json_dump(out, *this, indent, sort_keys, 0);
  return out;
}

const Value* Dict::find(const Value& key) const {
  for (const auto& item : items)
    if (equal(item.first, key)) return &item.second;
  return nullptr;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& item : items)
    if (item.first.is_string() && item.first.as_string() == key) return &item.second;
  return nullptr;
}

void Dict::set(Value key, Value value) {
  for (auto& item : items)
    if (equal(item.first, key)) {
      item.second = std::move(value);
      return;
    }
  items.emplace_back(std::move(key), std::move(value));
}

Value CallArgs::get(size_t index, const char* name, Value fallback) const {
  if (index < positional.size()) return positional[index];
  for (const auto& [key, value] : keywords)
    if (key == name) return value;
  return fallback;
}

bool CallArgs::has(size_t index, const char* name) const {
  if (index < positional.size()) return true;
  for (const auto& keyword : keywords)
    if (keyword.first == name) return true;
  return false;
}

bool equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::Float || b.kind() == K::Float) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::Undefined:
    case K::None: return true;
    case K::String: return a.as_string() == b.as_string();
    case K::List: {
      if (a.is_tuple() != b.is_tuple() || a.as_list().size() != b.as_list().size()) return false;
      for (size_t i = 0; i < a.as_list().size(); ++i)
        if (!equal(a.as_list()[i], b.as_list()[i])) return false;
      return true;
    }
    case K::Dict: {
      if (a.as_dict().items.size() != b.as_dict().items.size()) return false;
      for (const auto& [key, value] : a.as_dict().items) {
        const Value* other = b.as_dict().find(key);
        if (!other || !equal(value, *other)) return false;
      }
      return true;
    }
    case K::Namespace: return a.dict_ptr() == b.dict_ptr();
    default: return false;
  }
}

namespace detail {

void eval_fail(std::string message) { throw EvalError{std::move(message)}; }

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::u32string code_points(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) out += utf8::next(text, at);
  return out;
}

std::string from_code_points(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) utf8::append(out, c);
  return out;
}

// CPython's repr(float): the shortest digits that round-trip, fixed notation for exponents in [-4, 16), else
// scientific with at least two exponent digits; integral values keep ".0".
std::string py_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string text(buffer, result.ptr);
  std::string sign;
  if (text[0] == '-') {
    sign = "-";
    text.erase(0, 1);
  }
  const size_t e = text.find('e');
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(text.substr(e + 1));
  if (exponent >= -4 && exponent < 16) {
    std::string out;
    if (exponent < 0) {
      out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(static_cast<size_t>(exponent + 1) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exponent + 1)) + "." + digits.substr(static_cast<size_t>(exponent + 1));
    }
    return sign + out;
  }
  std::string mantissa = digits.substr(0, 1);
  if (digits.size() > 1) mantissa += "." + digits.substr(1);
  const int magnitude = std::abs(exponent);
  return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + (magnitude < 10 ? "0" : "") + std::to_string(magnitude);
}

namespace {

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return v.type_name() + " object";
}

[[noreturn]] void fail_undefined(const Value& v) {
  eval_fail(v.as_string().empty() ? std::string("value is undefined") : v.as_string());
}

Value missing_attribute(const Value& object, const std::string& name) {
  return Value::undefined(str("'", object_type_repr(object), "' has no attribute '", name, "'"));
}

// Python's str.strip family: `chars` Undefined/None strips whitespace.
std::string strip(const std::string& text, const Value& chars, bool left, bool right) {
  const std::u32string cps = code_points(text);
  std::u32string set;
  const bool whitespace = chars.is_undefined() || chars.is_none();
  if (!whitespace) {
    if (!chars.is_string()) eval_fail(str("strip arg must be None or str, not ", chars.type_name()));
    set = code_points(chars.as_string());
  }
  auto strip_it = [&](char32_t c) { return whitespace ? py_isspace(c) : set.find(c) != std::u32string::npos; };
  size_t begin = 0, end = cps.size();
  if (left)
    while (begin < end && strip_it(cps[begin])) ++begin;
  if (right)
    while (end > begin && strip_it(cps[end - 1])) --end;
  return from_code_points(cps.substr(begin, end - begin));
}

// Python's str.split / str.rsplit.
Value split(const std::string& text, const Value& separator, int64_t maxsplit, bool from_right) {
  List parts;
  if (separator.is_undefined() || separator.is_none()) {
    const std::u32string cps = code_points(text);
    std::vector<std::u32string> words;
    if (!from_right) {
      size_t i = 0;
      while (i < cps.size()) {
        while (i < cps.size() && py_isspace(cps[i])) ++i;
        if (i == cps.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(words.size()) == maxsplit) {
          size_t end = cps.size();
          while (end > i && py_isspace(cps[end - 1])) --end;
          words.push_back(cps.substr(i, end - i));
          break;
        }
        size_t j = i;
        while (j < cps.size() && !py_isspace(cps[j])) ++j;
        words.push_back(cps.substr(i, j - i));
        i = j;
      }
    } else {
      size_t i = cps.size();
      while (i > 0) {
        while (i > 0 && py_isspace(cps[i - 1])) --i;
        if (i == 0) break;
        if (maxsplit >= 0 && static_cast<int64_t>(words.size()) == maxsplit) {
          size_t begin = 0;
          while (begin < i && py_isspace(cps[begin])) ++begin;
          words.push_back(cps.substr(begin, i - begin));
          break;
        }
        size_t j = i;
        while (j > 0 && !py_isspace(cps[j - 1])) --j;
        words.push_back(cps.substr(j, i - j));
        i = j;
      }
      std::reverse(words.begin(), words.end());
    }
    for (const auto& word : words) parts.push_back(Value::string(from_code_points(word)));
    return Value::list(std::move(parts));
  }
  if (!separator.is_string()) eval_fail(str("must be str or None, not ", separator.type_name()));
  const std::string& sep = separator.as_string();
  if (sep.empty()) eval_fail("empty separator");
  std::vector<std::string> pieces;
  if (!from_right) {
    size_t start = 0;
    for (;;) {
      if (maxsplit >= 0 && static_cast<int64_t>(pieces.size()) == maxsplit) break;
      const size_t found = text.find(sep, start);
      if (found == std::string::npos) break;
      pieces.push_back(text.substr(start, found - start));
      start = found + sep.size();
    }
    pieces.push_back(text.substr(start));
  } else {
    size_t end = text.size();
    for (;;) {
      if (maxsplit >= 0 && static_cast<int64_t>(pieces.size()) == maxsplit) break;
      if (end < sep.size()) break;
      const size_t found = text.rfind(sep, end - sep.size());
      if (found == std::string::npos) break;
      pieces.push_back(text.substr(found + sep.size(), end - found - sep.size()));
      end = found;
    }
    pieces.push_back(text.substr(0, end));
    std::reverse(pieces.begin(), pieces.end());
  }
  for (auto& piece : pieces) parts.push_back(Value::string(std::move(piece)));
  return Value::list(std::move(parts));
}

std::string replace_all(const std::string& text, const std::string& old, const std::string& replacement, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts the replacement between every character (and at both ends).
    const std::u32string cps = code_points(text);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += replacement;
        ++done;
      }
      if (i < cps.size()) utf8::append(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  for (;;) {
    if (count >= 0 && done == count) break;
    const size_t found = text.find(old, start);
    if (found == std::string::npos) break;
    out.append(text, start, found - start);
    out += replacement;
    start = found + old.size();
    ++done;
  }
  out.append(text, start, std::string::npos);
  return out;
}

std::string ascii_case(std::string text, bool upper) {
  for (char& c : text) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return text;
}

bool ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python's str.title() on ASCII letters: a letter after a non-letter is upper-cased, others lower-cased.
std::string title_case(std::string text) {
  bool previous_cased = false;
  for (char& c : text) {
    if (ascii_letter(c)) {
      c = previous_cased ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                         : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      previous_cased = true;
    } else {
      previous_cased = false;
    }
  }
  return text;
}

std::string capitalize(const std::string& text) {
  std::string out = ascii_case(text, false);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

int64_t code_point_index(const std::string& text, size_t byte_offset) {
  int64_t count = 0;
  for (size_t at = 0; at < byte_offset;) {
    utf8::next(text, at);
    ++count;
  }
  return count;
}

bool affix_matches(const std::string& text, const Value& affix, bool prefix) {
  auto one = [&](const Value& candidate) {
    if (!candidate.is_string())
      eval_fail(str(prefix ? "startswith" : "endswith", " first arg must be str or a tuple of str, not ",
                    candidate.type_name()));
    const std::string& a = candidate.as_string();
    if (a.size() > text.size()) return false;
    return prefix ? text.compare(0, a.size(), a) == 0 : text.compare(text.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_list()) {
    for (const Value& candidate : affix.as_list())
      if (one(candidate)) return true;
    return false;
  }
  return one(affix);
}

Value method(const Value& self, const std::string& name, Function f) {
  (void)self;
  return Value::function(std::move(f), name);
}

Value string_method(const Value& self, const std::string& name) {
  const std::string text = self.as_string();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool left = name != "rstrip", right = name != "lstrip";
    return method(self, name, [text, left, right](CallArgs& a) {
      return Value::string(strip(text, a.get(0, "chars"), left, right));
    });
  }
  if (name == "split" || name == "rsplit") {
    const bool right = name == "rsplit";
    return method(self, name, [text, right](CallArgs& a) {
      const Value limit = a.get(1, "maxsplit", Value::integer(-1));
      return split(text, a.get(0, "sep"), limit.as_int(), right);
    });
  }
  if (name == "startswith" || name == "endswith") {
    const bool prefix = name == "startswith";
    return method(self, name, [text, prefix](CallArgs& a) {
      if (!a.has(0, "prefix") && !a.has(0, "suffix")) eval_fail("startswith/endswith takes at least 1 argument");
      return Value::boolean(affix_matches(text, a.positional.empty() ? a.keywords[0].second : a.positional[0], prefix));
    });
  }
  if (name == "replace")
    return method(self, name, [text](CallArgs& a) {
      const Value old = a.get(0, "old"), replacement = a.get(1, "new");
      if (!old.is_string() || !replacement.is_string()) eval_fail("replace() arguments must be str");
      return Value::string(replace_all(text, old.as_string(), replacement.as_string(),
                                       a.get(2, "count", Value::integer(-1)).as_int()));
    });
  if (name == "upper" || name == "lower")
    return method(self, name, [text, upper = name == "upper"](CallArgs&) { return Value::string(ascii_case(text, upper)); });
  if (name == "title") return method(self, name, [text](CallArgs&) { return Value::string(title_case(text)); });
  if (name == "capitalize") return method(self, name, [text](CallArgs&) { return Value::string(capitalize(text)); });
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return method(self, name, [text, name](CallArgs& a) {
      const Value sub = a.get(0, "sub");
      if (!sub.is_string()) eval_fail(str(name, "() argument must be str, not ", sub.type_name()));
      const std::string& needle = sub.as_string();
      if (name == "count") {
        if (needle.empty()) return Value::integer(code_point_index(text, text.size()) + 1);
        int64_t count = 0;
        for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++count;
        return Value::integer(count);
      }
      const size_t found = name[0] == 'r' ? text.rfind(needle) : text.find(needle);
      if (found == std::string::npos) {
        if (name == "index" || name == "rindex") eval_fail("substring not found");
        return Value::integer(-1);
      }
      return Value::integer(code_point_index(text, found));
    });
  }
  if (name == "join")
    return method(self, name, [text](CallArgs& a) {
      std::string out;
      const List items = iterate(a.get(0, "iterable"));
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string())
          eval_fail(str("sequence item ", i, ": expected str instance, ", items[i].type_name(), " found"));
        if (i > 0) out += text;
        out += items[i].as_string();
      }
      return Value::string(out);
    });
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum" || name == "isupper" ||
      name == "islower") {
    return method(self, name, [text, name](CallArgs&) {
      if (text.empty()) return Value::boolean(false);
      bool all = true, cased = false;
      for (char32_t c : code_points(text)) {
        const bool digit = c >= '0' && c <= '9', alpha = c < 128 && ascii_letter(static_cast<char>(c));
        if (name == "isdigit") all = all && digit;
        if (name == "isalpha") all = all && alpha;
        if (name == "isalnum") all = all && (digit || alpha);
        if (name == "isspace") all = all && py_isspace(c);
        if (name == "isupper" || name == "islower") {
          if (c >= 'a' && c <= 'z') {
            cased = true;
            if (name == "isupper") all = false;
          }
          if (c >= 'A' && c <= 'Z') {
            cased = true;
            if (name == "islower") all = false;
          }
        }
      }
      if (name == "isupper" || name == "islower") return Value::boolean(all && cased);
      return Value::boolean(all);
    });
  }
  if (name == "splitlines")
    return method(self, name, [text](CallArgs&) {
      List lines;
      size_t start = 0;
      while (start < text.size()) {
        size_t end = text.find_first_of("\r\n", start);
        if (end == std::string::npos) {
          lines.push_back(Value::string(text.substr(start)));
          break;
        }
        lines.push_back(Value::string(text.substr(start, end - start)));
        start = end + (text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n' ? 2 : 1);
      }
      return Value::list(std::move(lines));
    });
  return missing_attribute(self, name);
}

Value dict_method(const Value& self, const std::string& name) {
  const std::shared_ptr<Dict> d = self.dict_ptr();
  if (name == "items")
    return method(self, name, [d](CallArgs&) {
      List items;
      for (const auto& [key, value] : d->items) items.push_back(Value::list({key, value}, true));
      return Value::list(std::move(items));
    });
  if (name == "keys" || name == "values")
    return method(self, name, [d, keys = name == "keys"](CallArgs&) {
      List items;
      for (const auto& [key, value] : d->items) items.push_back(keys ? key : value);
      return Value::list(std::move(items));
    });
  if (name == "get")
    return method(self, name, [d](CallArgs& a) {
      const Value* found = d->find(a.get(0, "key"));
      return found ? *found : a.get(1, "default", Value::none());
    });
  return Value();
}

Value list_method(const Value& self, const std::string& name) {
  const List items = self.as_list();
  if (name == "index" || name == "count")
    return method(self, name, [items, name](CallArgs& a) {
      const Value x = a.get(0, "value");
      int64_t count = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!equal(items[i], x)) continue;
        if (name == "index") return Value::integer(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") eval_fail(str(x.repr(), " is not in list"));
      return Value::integer(count);
    });
  return missing_attribute(self, name);
}

// Python slice.indices(): normalised (start, stop, step) for a sequence of `length`.
void slice_indices(int64_t length, const Value& start_v, const Value& stop_v, const Value& step_v, int64_t& start,
                   int64_t& stop, int64_t& step) {
  auto given = [](const Value& v) { return !v.is_undefined() && !v.is_none(); };
  auto as_index = [](const Value& v) {
    if (v.kind() != Value::Kind::Int && v.kind() != Value::Kind::Bool)
      eval_fail("slice indices must be integers or None");
    return v.as_int();
  };
  step = given(step_v) ? as_index(step_v) : 1;
  if (step == 0) eval_fail("slice step cannot be zero");
  const int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? length - 1 : length;
  auto clamp = [&](const Value& v, int64_t fallback) {
    if (!given(v)) return fallback;
    int64_t i = as_index(v);
    if (i < 0) {
      i += length;
      if (i < lower) i = lower;
    } else if (i > upper) {
      i = upper;
    }
    return i;
  };
  start = clamp(start_v, step < 0 ? upper : lower);
  stop = clamp(stop_v, step < 0 ? lower : upper);
}

int compare_values(const Value& a, const Value& b, const char* op) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::Float || b.kind() == Value::Kind::Float) {
      const double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    return a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) return a.as_string().compare(b.as_string()) < 0 ? -1 : (a.as_string() == b.as_string() ? 0 : 1);
  if (a.is_list() && b.is_list()) {
    const List &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equal(x[i], y[i])) continue;
      return compare_values(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  eval_fail(str("'", op, "' not supported between instances of '", a.type_name(), "' and '", b.type_name(), "'"));
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(const Value& sequence, int64_t times) {
  if (sequence.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += sequence.as_string();
    return Value::string(out);
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), sequence.as_list().begin(), sequence.as_list().end());
  return Value::list(std::move(out), sequence.is_tuple());
}

bool is_integral(const Value& v) { return v.kind() == Value::Kind::Int || v.kind() == Value::Kind::Bool; }

}  // namespace

Value get_attribute(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Value::Kind::Undefined: fail_undefined(object);
    case Value::Kind::Dict: {
      if (Value m = dict_method(object, name); !m.is_undefined()) return m;
      const Value* found = object.as_dict().find(std::string_view(name));
      return found ? *found : missing_attribute(object, name);
    }
    case Value::Kind::Namespace: {
      const Value* found = object.as_dict().find(std::string_view(name));
      return found ? *found : missing_attribute(object, name);
    }
    case Value::Kind::String: return string_method(object, name);
    case Value::Kind::List: return list_method(object, name);
    default: return missing_attribute(object, name);
  }
}

Value get_item(const Value& object, const Value& key) {
  switch (object.kind()) {
    case Value::Kind::Undefined: fail_undefined(object);
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      if (const Value* found = object.as_dict().find(key)) return *found;
      break;
    }
    case Value::Kind::List:
    case Value::Kind::String: {
      if (!is_integral(key)) break;
      if (object.is_list()) {
        const int64_t size = static_cast<int64_t>(object.as_list().size());
        int64_t i = key.as_int();
        if (i < 0) i += size;
        if (i >= 0 && i < size) return object.as_list()[static_cast<size_t>(i)];
      } else {
        const std::u32string cps = code_points(object.as_string());
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(cps.size());
        if (i >= 0 && i < static_cast<int64_t>(cps.size())) return Value::string(from_code_points(cps.substr(i, 1)));
      }
      return Value::undefined(str(object_type_repr(object), " has no element ", key.repr()));
    }
    default: break;
  }
  if (key.is_string()) return get_attribute(object, key.as_string());
  return Value::undefined(str(object_type_repr(object), " has no element ", key.repr()));
}

Value get_slice(const Value& object, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (object.is_undefined()) fail_undefined(object);
  if (!object.is_list() && !object.is_string()) return Value::undefined(str("'", object_type_repr(object), "' cannot be sliced"));
  std::u32string cps;
  const int64_t length =
      object.is_list() ? static_cast<int64_t>(object.as_list().size()) : static_cast<int64_t>((cps = code_points(object.as_string())).size());
  int64_t start, stop, step;
  slice_indices(length, start_v, stop_v, step_v, start, stop, step);
  std::vector<int64_t> picks;
  if (step > 0)
    for (int64_t i = start; i < stop; i += step) picks.push_back(i);
  else
    for (int64_t i = start; i > stop; i += step) picks.push_back(i);
  if (object.is_list()) {
    List out;
    for (int64_t i : picks) out.push_back(object.as_list()[static_cast<size_t>(i)]);
    return Value::list(std::move(out), object.is_tuple());
  }
  std::u32string out;
  for (int64_t i : picks) out += cps[static_cast<size_t>(i)];
  return Value::string(from_code_points(out));
}

Value negate(const Value& a) {
  if (a.kind() == Value::Kind::Float) return Value::number(-a.as_float());
  if (is_integral(a)) return Value::integer(-a.as_int());
  if (a.is_undefined()) fail_undefined(a);
  eval_fail(str("bad operand type for unary -: '", a.type_name(), "'"));
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  using K = Value::Kind;
  if (op == "~") return Value::string(a.str() + b.str());
  if (op == "==") return Value::boolean(equal(a, b));
  if (op == "!=") return Value::boolean(!equal(a, b));
  if (op == "<") return Value::boolean(compare_values(a, b, "<") < 0);
  if (op == "<=") return Value::boolean(compare_values(a, b, "<=") <= 0);
  if (op == ">") return Value::boolean(compare_values(a, b, ">") > 0);
  if (op == ">=") return Value::boolean(compare_values(a, b, ">=") >= 0);
  if (op == "in") {
    switch (b.kind()) {
      case K::String:
        if (!a.is_string()) eval_fail(str("'in <string>' requires string as left operand, not ", a.type_name()));
        return Value::boolean(b.as_string().find(a.as_string()) != std::string::npos);
      case K::List:
        for (const Value& item : b.as_list())
          if (equal(item, a)) return Value::boolean(true);
        return Value::boolean(false);
      case K::Dict: return Value::boolean(b.as_dict().find(a) != nullptr);
      case K::Undefined: return Value::boolean(false);
      default: eval_fail(str("argument of type '", b.type_name(), "' is not iterable"));
    }
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool numbers = a.is_number() && b.is_number();
  const bool floats = numbers && (a.kind() == K::Float || b.kind() == K::Float);
  if (op == "+") {
    if (numbers) return floats ? Value::number(a.as_float() + b.as_float()) : Value::integer(a.as_int() + b.as_int());
    if (a.is_string() && b.is_string()) return Value::string(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      List out = a.as_list();
      out.insert(out.end(), b.as_list().begin(), b.as_list().end());
      return Value::list(std::move(out), a.is_tuple());
    }
    if (a.is_string()) eval_fail(str("can only concatenate str (not \"", b.type_name(), "\") to str"));
    eval_fail(str("unsupported operand type(s) for +: '", a.type_name(), "' and '", b.type_name(), "'"));
  }
  if (op == "*") {
    if (numbers) return floats ? Value::number(a.as_float() * b.as_float()) : Value::integer(a.as_int() * b.as_int());
    if ((a.is_string() || a.is_list()) && is_integral(b)) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && is_integral(a)) return repeat(b, a.as_int());
  }
  if (numbers) {
    if (op == "-") return floats ? Value::number(a.as_float() - b.as_float()) : Value::integer(a.as_int() - b.as_int());
    if (op == "/") {
      if (b.as_float() == 0.0) eval_fail("division by zero");
      return Value::number(a.as_float() / b.as_float());
    }
    if (op == "//" || op == "%") {
      if (b.as_float() == 0.0) eval_fail(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
      if (!floats) {
        const int64_t q = floor_div(a.as_int(), b.as_int());
        return op == "//" ? Value::integer(q) : Value::integer(a.as_int() - q * b.as_int());
      }
      const double q = std::floor(a.as_float() / b.as_float());
      if (op == "//") return Value::number(q);
      double m = std::fmod(a.as_float(), b.as_float());
      if (m != 0.0 && ((m < 0) != (b.as_float() < 0))) m += b.as_float();
      return Value::number(m);
    }
    if (op == "**") {
      if (!floats && b.as_int() >= 0) {
        int64_t result = 1;
        for (int64_t i = 0; i < b.as_int(); ++i) result *= a.as_int();
        return Value::integer(result);
      }
      return Value::number(std::pow(a.as_float(), b.as_float()));
    }
  }
  eval_fail(str("unsupported operand type(s) for ", op, ": '", a.type_name(), "' and '", b.type_name(), "'"));
}

List iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return value.as_list();
    case Value::Kind::Dict: {
      List keys;
      for (const auto& item : value.as_dict().items) keys.push_back(item.first);
      return keys;
    }
    case Value::Kind::String: {
      List chars;
      const std::string& text = value.as_string();
      for (size_t at = 0; at < text.size();) {
        const size_t start = at;
        utf8::next(text, at);
        chars.push_back(Value::string(text.substr(start, at - start)));
      }
      return chars;
    }
    default: eval_fail(str("'", value.type_name(), "' object is not iterable"));
  }
}

int64_t length_of(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::Undefined: return 0;
    case Value::Kind::String: return static_cast<int64_t>(code_points(value.as_string()).size());
    case Value::Kind::List: return static_cast<int64_t>(value.as_list().size());
    case Value::Kind::Dict:
    case Value::Kind::Namespace: return static_cast<int64_t>(value.as_dict().items.size());
    default: eval_fail(str("object of type '", value.type_name(), "' has no len()"));
  }
}

// --- filters ----------------------------------------------------------------------------------------------------------

namespace {

// Jinja's attribute path for map/selectattr/sort: "a.b.0" looks up a, then b, then item 0.
Value attribute_path(const Value& item, const std::string& path) {
  Value current = item;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    if (dot == std::string::npos) dot = path.size();
    const std::string part = path.substr(start, dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    current = get_item(current, numeric ? Value::integer(std::stoll(part)) : Value::string(part));
    start = dot + 1;
  }
  return current;
}

Value select_items(const Value& value, CallArgs& args, bool by_attribute, bool keep) {
  List out;
  const size_t first_test_arg = by_attribute ? 1 : 0;
  std::string attribute;
  if (by_attribute) {
    const Value name = args.get(0, "attribute");
    if (!name.is_string()) eval_fail("selectattr/rejectattr need an attribute name");
    attribute = name.as_string();
  }
  const bool has_test = args.positional.size() > first_test_arg;
  std::string test;
  CallArgs test_args;
  if (has_test) {
    const Value& name = args.positional[first_test_arg];
    if (!name.is_string()) eval_fail("select/reject: the test name must be a string");
    test = name.as_string();
    test_args.positional.assign(args.positional.begin() + static_cast<long>(first_test_arg) + 1, args.positional.end());
  }
  for (const Value& item : iterate(value)) {
    const Value subject = by_attribute ? attribute_path(item, attribute) : item;
    const bool passes = has_test ? apply_test(test, subject, test_args) : subject.truthy();
    if (passes == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value to_int(const Value& value, const Value& fallback) {
  switch (value.kind()) {
    case Value::Kind::Bool:
    case Value::Kind::Int: return Value::integer(value.as_int());
    case Value::Kind::Float:
      if (!std::isfinite(value.as_float())) return fallback;
      return Value::integer(static_cast<int64_t>(value.as_float()));
    case Value::Kind::String: {
      std::string text = strip(value.as_string(), Value(), true, true);
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      int64_t parsed = 0;
      const char* begin = text.data() + (text.size() > 0 && text[0] == '+' ? 1 : 0);
      auto [ptr, error] = std::from_chars(begin, text.data() + text.size(), parsed);
      if (error == std::errc() && ptr == text.data() + text.size() && !text.empty()) return Value::integer(parsed);
      char* end = nullptr;
      const double f = std::strtod(text.c_str(), &end);
      if (!text.empty() && end == text.c_str() + text.size() && std::isfinite(f)) return Value::integer(static_cast<int64_t>(f));
      return fallback;
    }
    default: return fallback;
  }
}

Value to_float(const Value& value, const Value& fallback) {
  switch (value.kind()) {
    case Value::Kind::Bool:
    case Value::Kind::Int:
    case Value::Kind::Float: return Value::number(value.as_float());
    case Value::Kind::String: {
      const std::string text = strip(value.as_string(), Value(), true, true);
      char* end = nullptr;
      const double f = std::strtod(text.c_str(), &end);
      if (!text.empty() && end == text.c_str() + text.size()) return Value::number(f);
      return fallback;
    }
    default: return fallback;
  }
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value sorted_items(const Value& value, CallArgs& args) {
  List items = iterate(value);
  const bool reverse = args.get(0, "reverse", Value::boolean(false)).truthy();
  const bool case_sensitive = args.get(1, "case_sensitive", Value::boolean(false)).truthy();
  const Value attribute = args.get(2, "attribute");
  auto key = [&](const Value& item) {
    Value k = attribute.is_string() ? attribute_path(item, attribute.as_string()) : item;
    if (!case_sensitive && k.is_string()) k = Value::string(ascii_case(k.as_string(), false));
    return k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    const int c = compare_values(key(a), key(b), "<");
    return reverse ? c > 0 : c < 0;
  });
  return Value::list(std::move(items));
}

using FilterFn = Value (*)(const Value&, CallArgs&);

struct FilterEntry {
  const char* name;
  FilterFn fn;
};

const FilterEntry kFilters[] = {
    {"abs",
     [](const Value& v, CallArgs&) {
       if (v.kind() == Value::Kind::Float) return Value::number(std::fabs(v.as_float()));
       if (is_integral(v)) return Value::integer(std::llabs(v.as_int()));
       eval_fail(str("bad operand type for abs(): '", v.type_name(), "'"));
     }},
    {"capitalize", [](const Value& v, CallArgs&) { return Value::string(capitalize(v.str())); }},
    {"count", [](const Value& v, CallArgs&) { return Value::integer(length_of(v)); }},
    {"length", [](const Value& v, CallArgs&) { return Value::integer(length_of(v)); }},
    {"default",
     [](const Value& v, CallArgs& a) {
       const bool boolean = a.get(1, "boolean", Value::boolean(false)).truthy();
       if (v.is_undefined() || (boolean && !v.truthy())) return a.get(0, "default_value", Value::string(""));
       return v;
     }},
    {"d",
     [](const Value& v, CallArgs& a) {
       const bool boolean = a.get(1, "boolean", Value::boolean(false)).truthy();
       if (v.is_undefined() || (boolean && !v.truthy())) return a.get(0, "default_value", Value::string(""));
       return v;
     }},
    {"escape", [](const Value& v, CallArgs&) { return Value::string(html_escape(v.str())); }},
    {"e", [](const Value& v, CallArgs&) { return Value::string(html_escape(v.str())); }},
    {"first",
     [](const Value& v, CallArgs&) {
       const List items = iterate(v);
       return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
     }},
    {"last",
     [](const Value& v, CallArgs&) {
       const List items = iterate(v);
       return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
     }},
    {"float", [](const Value& v, CallArgs& a) { return to_float(v, a.get(0, "default", Value::number(0.0))); }},
    {"int", [](const Value& v, CallArgs& a) { return to_int(v, a.get(0, "default", Value::integer(0))); }},
    {"indent",
     [](const Value& v, CallArgs& a) {
       const Value width_v = a.get(0, "width", Value::integer(4));
       const std::string pad = width_v.is_string() ? width_v.as_string() : std::string(static_cast<size_t>(width_v.as_int()), ' ');
       const bool first = a.get(1, "first", Value::boolean(false)).truthy();
       const bool blank = a.get(2, "blank", Value::boolean(false)).truthy();
       const std::string text = v.str();
       std::string out;
       size_t start = 0;
       bool first_line = true;
       while (start <= text.size()) {
         size_t end = text.find('\n', start);
         const bool last = end == std::string::npos;
         if (last) end = text.size();
         const std::string line = text.substr(start, end - start);
         if ((!first_line || first) && (blank || !strip(line, Value(), true, true).empty())) out += pad;
         out += line;
         if (!last) out += '\n';
         first_line = false;
         start = end + 1;
         if (last) break;
       }
       return Value::string(out);
     }},
    {"items",
     [](const Value& v, CallArgs&) {
       if (v.is_undefined()) return Value::list({});
       if (!v.is_dict()) eval_fail(str("items: can only get item pairs from a mapping, not ", v.type_name()));
       List items;
       for (const auto& [key, value] : v.as_dict().items) items.push_back(Value::list({key, value}, true));
       return Value::list(std::move(items));
     }},
    {"join",
     [](const Value& v, CallArgs& a) {
       const Value separator = a.get(0, "d", Value::string(""));
       const Value attribute = a.get(1, "attribute");
       std::string out;
       const List items = iterate(v);
       for (size_t i = 0; i < items.size(); ++i) {
         if (i > 0) out += separator.str();
         out += (attribute.is_string() ? attribute_path(items[i], attribute.as_string()) : items[i]).str();
       }
       return Value::string(out);
     }},
    {"list", [](const Value& v, CallArgs&) { return Value::list(iterate(v)); }},
    {"lower", [](const Value& v, CallArgs&) { return Value::string(ascii_case(v.str(), false)); }},
    {"upper", [](const Value& v, CallArgs&) { return Value::string(ascii_case(v.str(), true)); }},
    {"title", [](const Value& v, CallArgs&) { return Value::string(title_case(v.str())); }},
    {"map",
     [](const Value& v, CallArgs& a) {
       List out;
       const Value attribute = a.get(99, "attribute");
       if (attribute.is_string()) {
         const Value fallback = a.get(99, "default");
         for (const Value& item : iterate(v)) {
           Value picked = attribute_path(item, attribute.as_string());
           out.push_back(picked.is_undefined() && !fallback.is_undefined() ? fallback : picked);
         }
         return Value::list(std::move(out));
       }
       if (a.positional.empty() || !a.positional[0].is_string()) eval_fail("map: needs a filter name or attribute=");
       const std::string filter = a.positional[0].as_string();
       CallArgs rest;
       rest.positional.assign(a.positional.begin() + 1, a.positional.end());
       rest.keywords = a.keywords;
       for (const Value& item : iterate(v)) {
         CallArgs copy = rest;
         out.push_back(apply_filter(filter, item, copy));
       }
       return Value::list(std::move(out));
     }},
    {"select", [](const Value& v, CallArgs& a) { return select_items(v, a, false, true); }},
    {"reject", [](const Value& v, CallArgs& a) { return select_items(v, a, false, false); }},
    {"selectattr", [](const Value& v, CallArgs& a) { return select_items(v, a, true, true); }},
    {"rejectattr", [](const Value& v, CallArgs& a) { return select_items(v, a, true, false); }},
    {"replace",
     [](const Value& v, CallArgs& a) {
       const Value old = a.get(0, "old"), replacement = a.get(1, "new");
       const Value count = a.get(2, "count", Value::none());
       return Value::string(replace_all(v.str(), old.str(), replacement.str(), count.is_none() ? -1 : count.as_int()));
     }},
    {"reverse",
     [](const Value& v, CallArgs&) {
       if (v.is_string()) {
         std::u32string cps = code_points(v.as_string());
         std::reverse(cps.begin(), cps.end());
         return Value::string(from_code_points(cps));
       }
       List items = iterate(v);
       std::reverse(items.begin(), items.end());
       return Value::list(std::move(items));
     }},
    {"round",
     [](const Value& v, CallArgs& a) {
       const int64_t precision = a.get(0, "precision", Value::integer(0)).as_int();
       const std::string how = a.get(1, "method", Value::string("common")).str();
       const double scale = std::pow(10.0, static_cast<double>(precision));
       double x = v.as_float() * scale;
       x = how == "ceil" ? std::ceil(x) : how == "floor" ? std::floor(x) : std::round(x);
       return Value::number(x / scale);
     }},
    {"safe", [](const Value& v, CallArgs&) { return v; }},
    {"sort", [](const Value& v, CallArgs& a) { return sorted_items(v, a); }},
    {"string", [](const Value& v, CallArgs&) { return Value::string(v.str()); }},
    {"sum",
     [](const Value& v, CallArgs& a) {
       const Value attribute = a.get(0, "attribute");
       Value total = a.get(1, "start", Value::integer(0));
       for (const Value& item : iterate(v))
         total = binary_op("+", total, attribute.is_string() ? attribute_path(item, attribute.as_string()) : item);
       return total;
     }},
    {"tojson",
     [](const Value& v, CallArgs& a) {
       const Value indent = a.get(1, "indent", Value::none());
       const bool sort_keys = a.get(3, "sort_keys", Value::boolean(false)).truthy();
       return Value::string(v.to_json(indent.is_none() ? -1 : static_cast<int>(indent.as_int()), sort_keys));
     }},
    {"trim", [](const Value& v, CallArgs& a) { return Value::string(strip(v.str(), a.get(0, "chars"), true, true)); }},
    {"unique",
     [](const Value& v, CallArgs& a) {
       const bool case_sensitive = a.get(0, "case_sensitive", Value::boolean(false)).truthy();
       List out, keys;
       for (const Value& item : iterate(v)) {
         Value key = !case_sensitive && item.is_string() ? Value::string(ascii_case(item.as_string(), false)) : item;
         bool seen = false;
         for (const Value& k : keys) seen = seen || equal(k, key);
         if (seen) continue;
         keys.push_back(key);
         out.push_back(item);
       }
       return Value::list(std::move(out));
     }},
    {"wordcount",
     [](const Value& v, CallArgs&) { return Value::integer(length_of(split(v.str(), Value(), -1, false))); }},
};

bool test_number(const Value& v) { return v.is_number(); }

using TestFn = bool (*)(const Value&, CallArgs&);
struct TestEntry {
  const char* name;
  TestFn fn;
};

Value test_arg(CallArgs& a) {
  if (a.positional.empty()) eval_fail("test needs an argument");
  return a.positional[0];
}

const TestEntry kTests[] = {
    {"defined", [](const Value& v, CallArgs&) { return !v.is_undefined(); }},
    {"undefined", [](const Value& v, CallArgs&) { return v.is_undefined(); }},
    {"none", [](const Value& v, CallArgs&) { return v.is_none(); }},
    {"boolean", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Bool; }},
    {"true", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Bool && v.as_bool(); }},
    {"false", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Bool && !v.as_bool(); }},
    {"integer", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Int; }},
    {"float", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Float; }},
    {"number", [](const Value& v, CallArgs&) { return test_number(v); }},
    {"string", [](const Value& v, CallArgs&) { return v.is_string(); }},
    {"mapping", [](const Value& v, CallArgs&) { return v.is_dict(); }},
    {"iterable",
     [](const Value& v, CallArgs&) { return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict(); }},
    {"sequence",
     [](const Value& v, CallArgs&) { return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict(); }},
    {"callable", [](const Value& v, CallArgs&) { return v.kind() == Value::Kind::Function; }},
    {"odd", [](const Value& v, CallArgs&) { return is_integral(v) && (v.as_int() % 2 != 0); }},
    {"even", [](const Value& v, CallArgs&) { return is_integral(v) && (v.as_int() % 2 == 0); }},
    {"divisibleby",
     [](const Value& v, CallArgs& a) {
       const Value n = test_arg(a);
       return n.as_int() != 0 && v.as_int() % n.as_int() == 0;
     }},
    {"eq", [](const Value& v, CallArgs& a) { return equal(v, test_arg(a)); }},
    {"equalto", [](const Value& v, CallArgs& a) { return equal(v, test_arg(a)); }},
    {"==", [](const Value& v, CallArgs& a) { return equal(v, test_arg(a)); }},
    {"ne", [](const Value& v, CallArgs& a) { return !equal(v, test_arg(a)); }},
    {"!=", [](const Value& v, CallArgs& a) { return !equal(v, test_arg(a)); }},
    {"lt", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), "<") < 0; }},
    {"lessthan", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), "<") < 0; }},
    {"<", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), "<") < 0; }},
    {"le", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), "<=") <= 0; }},
    {"<=", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), "<=") <= 0; }},
    {"gt", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), ">") > 0; }},
    {"greaterthan", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), ">") > 0; }},
    {">", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), ">") > 0; }},
    {"ge", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), ">=") >= 0; }},
    {">=", [](const Value& v, CallArgs& a) { return compare_values(v, test_arg(a), ">=") >= 0; }},
    {"in", [](const Value& v, CallArgs& a) { return binary_op("in", v, test_arg(a)).as_bool(); }},
    {"sameas",
     [](const Value& v, CallArgs& a) {
       const Value other = test_arg(a);
       if (v.kind() != other.kind()) return false;
       if (v.is_none() || v.is_undefined()) return true;
       if (v.kind() == Value::Kind::Bool) return v.as_bool() == other.as_bool();
       if (v.is_list()) return &v.as_list() == &other.as_list();
       if (v.is_dict() || v.kind() == Value::Kind::Namespace) return v.dict_ptr() == other.dict_ptr();
       return false;
     }},
    {"lower",
     [](const Value& v, CallArgs&) { return v.is_string() && ascii_case(v.as_string(), false) == v.as_string(); }},
    {"upper",
     [](const Value& v, CallArgs&) { return v.is_string() && ascii_case(v.as_string(), true) == v.as_string(); }},
};

}  // namespace

bool has_filter(const std::string& name) {
  for (const FilterEntry& entry : kFilters)
    if (name == entry.name) return true;
  return false;
}

bool has_test(const std::string& name) {
  for (const TestEntry& entry : kTests)
    if (name == entry.name) return true;
  return false;
}

Value apply_filter(const std::string& name, const Value& value, CallArgs& args) {
  for (const FilterEntry& entry : kFilters)
    if (name == entry.name) return entry.fn(value, args);
  eval_fail(str("unsupported filter '", name, "'"));
}

bool apply_test(const std::string& name, const Value& value, CallArgs& args) {
  for (const TestEntry& entry : kTests)
    if (name == entry.name) return entry.fn(value, args);
  eval_fail(str("unsupported test '", name, "'"));
}

// --- globals ----------------------------------------------------------------------------------------------------------

Value lookup_global(const std::string& name) {
  if (name == "range")
    return Value::function(
        [](CallArgs& a) {
          int64_t start = 0, stop = 0, step = 1;
          const size_t n = a.positional.size();
          for (const Value& v : a.positional)
            if (!is_integral(v)) eval_fail(str("'", v.type_name(), "' object cannot be interpreted as an integer"));
          if (n == 1) stop = a.positional[0].as_int();
          else if (n == 2 || n == 3) {
            start = a.positional[0].as_int();
            stop = a.positional[1].as_int();
            if (n == 3) step = a.positional[2].as_int();
          } else {
            eval_fail(str("range expected 1 to 3 arguments, got ", n));
          }
          if (step == 0) eval_fail("range() arg 3 must not be zero");
          List out;
          for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            out.push_back(Value::integer(i));
            if (out.size() > 10'000'000) eval_fail("range too large");
          }
          return Value::list(std::move(out));
        },
        "range");
  if (name == "namespace" || name == "dict")
    return Value::function(
        [is_namespace = name == "namespace"](CallArgs& a) {
          auto d = std::make_shared<Dict>();
          for (const Value& positional : a.positional) {
            if (!positional.is_dict()) eval_fail("namespace()/dict(): positional arguments must be dicts");
            for (const auto& item : positional.as_dict().items) d->set(item.first, item.second);
          }
          for (const auto& [key, value] : a.keywords) d->set(Value::string(key), value);
          return is_namespace ? Value::namespace_object(std::move(d)) : Value::dict(std::move(d));
        },
        name);
  if (name == "strftime_now")
    return Value::function(
        [](CallArgs& a) {
          const std::string format = a.get(0, "format").str();
          const std::time_t now = std::time(nullptr);
          std::tm local{};
          localtime_r(&now, &local);
          char buffer[256];
          const size_t n = std::strftime(buffer, sizeof buffer, format.c_str(), &local);
          return Value::string(std::string(buffer, n));
        },
        "strftime_now");
  return Value();
}

}  // namespace detail
}  // namespace moetune::jinja

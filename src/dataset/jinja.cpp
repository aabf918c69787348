// Why: see jinja.h. The lexer follows Jinja2's (whitespace control, trim_blocks, lstrip_blocks, Python string
// escapes), the parser Jinja2's grammar (jinja2/parser.py: condexpr > or > and > not > compare > + - > ~ > * / // % >
// ** > unary > primary, postfix, filters and tests), and the evaluator walks the tree with Jinja's scoping: a for loop
// gives each iteration a fresh scope (a set inside the loop never leaks out, which is why templates use namespace()),
// if blocks give none, macros get their own.
#include "dataset/jinja.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "dataset/jinja_internal.h"
#include "tokenizer/utf8.h"

namespace moetune::jinja {

using detail::EvalError;
using detail::eval_fail;

namespace {

// raise_exception(message) from the template.
struct Raised {
  std::string message;
};

// --- lexer ------------------------------------------------------------------------------------------------------------

enum class Tok { Name, String, Int, Float, Op, End };

struct Token {
  Tok type = Tok::End;
  std::string text;  // name, operator, or the decoded string
  int64_t integer = 0;
  double number = 0.0;
  int line = 0;
};

struct Item {
  enum Kind { Text, Print, Block } kind;
  std::string text;
  std::vector<Token> tokens;  // Print/Block, ending with an End token
  int line;
};

bool is_space_at(std::string_view s, size_t at, size_t* length) {
  const unsigned char c = static_cast<unsigned char>(s[at]);
  if (c < 0x80) {
    *length = 1;
    return detail::py_isspace(c);
  }
  size_t next = at;
  const char32_t cp = utf8::next(s, next);
  *length = next - at;
  return detail::py_isspace(cp);
}

// Python str.rstrip() (all Unicode whitespace).
std::string rstrip_whitespace(const std::string& text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end;
    const char32_t c = utf8::previous(text, start);
    if (!detail::py_isspace(c)) break;
    end = start;
  }
  return text.substr(0, end);
}

class Lexer {
 public:
  Lexer(std::string source, const std::string& name) : src_(std::move(source)), name_(name) {}

  std::vector<Item> run() {
    std::vector<Item> items;
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = next_tag(pos);
      std::string text = src_.substr(pos, tag == std::string::npos ? std::string::npos : tag - pos);
      if (tag == std::string::npos) {
        push_text(items, text, pos);
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      if (sign == '-') {
        text = rstrip_whitespace(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs between the start of a line and a block or comment tag go.
        const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (line_start > 0 || line_starting) {
          bool only_space = line_start < text.size();
          for (size_t i = line_start; i < text.size() && only_space;) {
            size_t length = 1;
            only_space = is_space_at(text, i, &length);
            i += length;
          }
          if (only_space) text.resize(line_start);
        }
      }
      push_text(items, text, pos);
      const int line = line_at(tag);
      size_t p = tag + 2 + (sign ? 1 : 0);
      char end_sign = 0;
      if (kind == '#') {
        const size_t close = src_.find("#}", p);
        if (close == std::string::npos) fail_at(line, "comment is not closed (missing #})");
        end_sign = close > p && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
        pos = close + 2;
      } else {
        Item item{kind == '{' ? Item::Print : Item::Block, "", {}, line};
        pos = lex_tag(p, kind, item.tokens, &end_sign);
        items.push_back(std::move(item));
      }
      const size_t before = pos;
      if (end_sign == '-') {
        size_t length = 1;
        while (pos < src_.size() && is_space_at(src_, pos, &length)) pos += length;
      } else if (end_sign != '+' && kind != '{' && pos < src_.size() && src_[pos] == '\n') {
        ++pos;  // trim_blocks
      }
      line_starting = pos > before ? src_[pos - 1] == '\n' : false;
    }
    return items;
  }

 private:
  size_t next_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1))
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  int line_at(size_t offset) {
    while (counted_ < offset) {
      if (src_[counted_] == '\n') ++line_;
      ++counted_;
    }
    return line_;
  }

  void push_text(std::vector<Item>& items, const std::string& text, size_t offset) {
    if (!text.empty()) items.push_back(Item{Item::Text, text, {}, line_at(offset)});
  }

  [[noreturn]] void fail_at(int line, const std::string& message) const {
    throw TemplateError(str(name_, ":", line, ": ", message));
  }

  // Lexes a {{ ... }} or {% ... %} tag from `p`; returns the position after its end marker.
  size_t lex_tag(size_t p, char kind, std::vector<Token>& tokens, char* end_sign) {
    const char close = kind == '{' ? '}' : '%';
    int depth = 0;
    for (;;) {
      size_t length = 1;
      while (p < src_.size() && is_space_at(src_, p, &length)) p += length;
      const int line = line_at(std::min(p, src_.size()));
      if (p >= src_.size()) fail_at(line, str("tag is not closed (missing ", close, "})"));
      if (depth == 0) {
        if ((src_[p] == '-' || src_[p] == '+') && p + 2 < src_.size() + 0 && src_[p + 1] == close && src_[p + 2] == '}') {
          if (src_[p] == '+' && kind == '{') fail_at(line, "unexpected '+'");
          *end_sign = src_[p];
          tokens.push_back(Token{Tok::End, "", 0, 0.0, line});
          return p + 3;
        }
        if (src_[p] == close && p + 1 < src_.size() && src_[p + 1] == '}') {
          tokens.push_back(Token{Tok::End, "", 0, 0.0, line});
          return p + 2;
        }
      }
      const char c = src_[p];
      Token token;
      token.line = line;
      if (c == '\'' || c == '"') {
        token.type = Tok::String;
        p = lex_string(p, &token.text, line);
      } else if (c >= '0' && c <= '9') {
        p = lex_number(p, &token);
      } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        size_t end = p;
        while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
        token.type = Tok::Name;
        token.text = src_.substr(p, end - p);
        p = end;
      } else {
        static const char* const kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        token.type = Tok::Op;
        for (const char* op : kTwo)
          if (src_.compare(p, 2, op) == 0) token.text = op;
        if (token.text.empty()) {
          if (std::strchr("+-*/%~<>=.,:|()[]{};", c) == nullptr || c == 0)
            fail_at(line, str("unexpected character '", std::string(1, c), "'"));
          token.text = std::string(1, c);
        }
        p += token.text.size();
        if (token.text == "(" || token.text == "[" || token.text == "{") ++depth;
        if ((token.text == ")" || token.text == "]" || token.text == "}") && depth > 0) --depth;
      }
      tokens.push_back(std::move(token));
    }
  }

  // A Python string literal decoded as Jinja does (value.encode("ascii", "backslashreplace").decode("unicode-escape")).
  size_t lex_string(size_t p, std::string* out, int line) {
    const char quote = src_[p++];
    for (;;) {
      if (p >= src_.size()) fail_at(line, "string literal is not closed");
      const char c = src_[p];
      if (c == quote) return p + 1;
      if (c != '\\') {
        out->push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) fail_at(line, "string literal is not closed");
      const char e = src_[p + 1];
      p += 2;
      auto hex_escape = [&](int digits) {
        if (p + static_cast<size_t>(digits) > src_.size()) fail_at(line, "truncated escape in a string literal");
        uint32_t value = 0;
        for (int i = 0; i < digits; ++i) {
          const char h = src_[p + static_cast<size_t>(i)];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail_at(line, "truncated escape in a string literal");
          value = value * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        p += static_cast<size_t>(digits);
        if (value > 0x10FFFF) fail_at(line, "illegal Unicode character in a string literal");
        utf8::append(*out, static_cast<char32_t>(value));
      };
      switch (e) {
        case '\n': break;
        case '\\': out->push_back('\\'); break;
        case '\'': out->push_back('\''); break;
        case '"': out->push_back('"'); break;
        case 'a': out->push_back('\a'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'v': out->push_back('\v'); break;
        case 'x': hex_escape(2); break;
        case 'u': hex_escape(4); break;
        case 'U': hex_escape(8); break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t value = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i)
              value = value * 8 + static_cast<uint32_t>(src_[p++] - '0');
            utf8::append(*out, static_cast<char32_t>(value));
          } else {
            out->push_back('\\');
            out->push_back(e);
          }
      }
    }
  }

  size_t lex_number(size_t p, Token* token) {
    auto digits = [&](size_t q) {
      while (q < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                                 (src_[q] == '_' && q + 1 < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q + 1])))))
        ++q;
      return q;
    };
    size_t end = digits(p);
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      end = digits(end + 1);
      is_float = true;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t q = end + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        end = digits(q);
        is_float = true;
      }
    }
    std::string text = src_.substr(p, end - p);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    if (is_float) {
      token->type = Tok::Float;
      token->number = std::strtod(text.c_str(), nullptr);
    } else {
      token->type = Tok::Int;
      token->integer = std::strtoll(text.c_str(), nullptr, 10);
    }
    return end;
  }

  std::string src_;
  const std::string& name_;
  size_t counted_ = 0;
  int line_ = 1;
};

// --- AST ------------------------------------------------------------------------------------------------------------

struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  Value* find(const std::string& name) {
    for (Scope* s = this; s; s = s->parent)
      for (auto& [key, value] : s->vars)
        if (key == name) return &value;
    return nullptr;
  }
  void set(const std::string& name, Value value) {
    for (auto& [key, existing] : vars)
      if (key == name) {
        existing = std::move(value);
        return;
      }
    vars.emplace_back(name, std::move(value));
  }
};

enum class Flow { Normal, Break, Continue };

struct RenderState {
  const std::string& name;
  std::string out;
  std::vector<GenerationSpan>* spans = nullptr;
  Flow flow = Flow::Normal;
  int macro_depth = 0;
  Scope* root = nullptr;
};

struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  virtual Value eval(RenderState& st, Scope& scope) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node {
  int line = 0;
  virtual ~Node() = default;
  virtual void render(RenderState& st, Scope& scope) const = 0;
};
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

void render_list(const NodeList& nodes, RenderState& st, Scope& scope) {
  for (const NodePtr& node : nodes) {
    node->render(st, scope);
    if (st.flow != Flow::Normal) return;
  }
}

// Converts evaluation errors into TemplateErrors naming the template and `line`.
template <class F>
void guarded(const RenderState& st, int line, F&& body) {
  try {
    body();
  } catch (const EvalError& error) {
    throw TemplateError(str(st.name, ":", line, ": ", error.message));
  } catch (const Raised& raised) {
    throw RaisedError(str(st.name, ":", line, ": raise_exception: ", raised.message));
  }
}

struct ConstExpr : Expr {
  Value value;
  Value eval(RenderState&, Scope&) const override { return value; }
};

struct NameExpr : Expr {
  std::string name;
  Value eval(RenderState&, Scope& scope) const override {
    if (Value* found = scope.find(name)) return *found;
    if (name == "raise_exception")
      return Value::function([](CallArgs& a) -> Value { throw Raised{a.get(0, "message").str()}; }, name);
    if (Value global = detail::lookup_global(name); !global.is_undefined()) return global;
    return Value::undefined(str("'", name, "' is undefined"));
  }
};

struct AttrExpr : Expr {
  ExprPtr object;
  std::string name;
  Value eval(RenderState& st, Scope& scope) const override { return detail::get_attribute(object->eval(st, scope), name); }
};

struct ItemExpr : Expr {
  ExprPtr object, key;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value target = object->eval(st, scope);
    return detail::get_item(target, key->eval(st, scope));
  }
};

struct SliceExpr : Expr {
  ExprPtr object, start, stop, step;  // each but object may be null
  Value eval(RenderState& st, Scope& scope) const override {
    const Value target = object->eval(st, scope);
    auto part = [&](const ExprPtr& e) { return e ? e->eval(st, scope) : Value::none(); };
    return detail::get_slice(target, part(start), part(stop), part(step));
  }
};

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  CallArgs eval(RenderState& st, Scope& scope) const {
    CallArgs args;
    for (const ExprPtr& e : positional) args.positional.push_back(e->eval(st, scope));
    for (const auto& [key, e] : keywords) args.keywords.emplace_back(key, e->eval(st, scope));
    return args;
  }
};

struct CallExpr : Expr {
  ExprPtr callee;
  Arguments args;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value f = callee->eval(st, scope);
    CallArgs values = args.eval(st, scope);
    if (f.kind() != Value::Kind::Function) {
      if (f.is_undefined()) eval_fail(f.as_string().empty() ? "calling an undefined value" : f.as_string());
      eval_fail(str("'", f.type_name(), "' object is not callable"));
    }
    return f.as_function()(values);
  }
};

struct FilterExpr : Expr {
  ExprPtr value;
  std::string name;
  Arguments args;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value v = value->eval(st, scope);
    CallArgs values = args.eval(st, scope);
    return detail::apply_filter(name, v, values);
  }
};

struct TestExpr : Expr {
  ExprPtr value;
  std::string name;
  bool negated = false;
  Arguments args;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value v = value->eval(st, scope);
    CallArgs values = args.eval(st, scope);
    return Value::boolean(detail::apply_test(name, v, values) != negated);
  }
};

struct UnaryExpr : Expr {
  std::string op;  // "not", "-", "+"
  ExprPtr operand;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value v = operand->eval(st, scope);
    if (op == "not") return Value::boolean(!v.truthy());
    if (op == "-") return detail::negate(v);
    if (!v.is_number()) eval_fail(str("bad operand type for unary +: '", v.type_name(), "'"));
    return v;
  }
};

struct BinaryExpr : Expr {
  std::string op;
  ExprPtr left, right;
  Value eval(RenderState& st, Scope& scope) const override {
    const Value a = left->eval(st, scope);
    return detail::binary_op(op, a, right->eval(st, scope));
  }
};

struct ConcatExpr : Expr {
  std::vector<ExprPtr> parts;
  Value eval(RenderState& st, Scope& scope) const override {
    std::string out;
    for (const ExprPtr& part : parts) out += part->eval(st, scope).str();
    return Value::string(out);
  }
};

struct CompareExpr : Expr {
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> ops;  // "==", "<", ..., "in", "notin"
  Value eval(RenderState& st, Scope& scope) const override {
    Value left = first->eval(st, scope);
    for (const auto& [op, expr] : ops) {
      Value right = expr->eval(st, scope);
      const bool holds = op == "notin" ? !detail::binary_op("in", left, right).as_bool()
                                       : detail::binary_op(op, left, right).as_bool();
      if (!holds) return Value::boolean(false);
      left = std::move(right);
    }
    return Value::boolean(true);
  }
};

struct LogicExpr : Expr {
  bool is_and = false;
  ExprPtr left, right;
  Value eval(RenderState& st, Scope& scope) const override {
    Value a = left->eval(st, scope);
    if (is_and ? !a.truthy() : a.truthy()) return a;
    return right->eval(st, scope);
  }
};

struct CondExpr : Expr {
  ExprPtr test, then, otherwise;  // otherwise may be null
  Value eval(RenderState& st, Scope& scope) const override {
    if (test->eval(st, scope).truthy()) return then->eval(st, scope);
    return otherwise ? otherwise->eval(st, scope) : Value::undefined("the inline if expression evaluated to false and no else section was defined");
  }
};

struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval(RenderState& st, Scope& scope) const override {
    List values;
    for (const ExprPtr& item : items) values.push_back(item->eval(st, scope));
    return Value::list(std::move(values), tuple);
  }
};

struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(RenderState& st, Scope& scope) const override {
    auto d = std::make_shared<Dict>();
    for (const auto& [key, value] : items) d->set(key->eval(st, scope), value->eval(st, scope));
    return Value::dict(std::move(d));
  }
};

// --- statements -------------------------------------------------------------------------------------------------------

struct TextNode : Node {
  std::string text;
  void render(RenderState& st, Scope&) const override { st.out += text; }
};

struct PrintNode : Node {
  ExprPtr expr;
  void render(RenderState& st, Scope& scope) const override {
    guarded(st, line, [&] { st.out += expr->eval(st, scope).str(); });
  }
};

struct IfNode : Node {
  std::vector<std::pair<ExprPtr, NodeList>> branches;
  NodeList otherwise;
  void render(RenderState& st, Scope& scope) const override {
    for (const auto& [test, body] : branches) {
      bool taken = false;
      guarded(st, test->line, [&] { taken = test->eval(st, scope).truthy(); });
      if (taken) {
        render_list(body, st, scope);
        return;
      }
    }
    render_list(otherwise, st, scope);
  }
};

void assign_targets(const std::vector<std::string>& targets, const Value& value, Scope& scope) {
  if (targets.size() == 1) {
    scope.set(targets[0], value);
    return;
  }
  const List items = detail::iterate(value);
  if (items.size() != targets.size())
    eval_fail(str(items.size() < targets.size() ? "not enough" : "too many", " values to unpack (expected ",
                  targets.size(), ", got ", items.size(), ")"));
  for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], items[i]);
}

struct ForNode : Node {
  std::vector<std::string> targets;
  ExprPtr iterable, filter;
  NodeList body, otherwise;
  void render(RenderState& st, Scope& scope) const override {
    List items;
    guarded(st, line, [&] {
      items = detail::iterate(iterable->eval(st, scope));
      if (filter) {
        List kept;
        for (const Value& item : items) {
          Scope probe{&scope, {}};
          assign_targets(targets, item, probe);
          if (filter->eval(st, probe).truthy()) kept.push_back(item);
        }
        items = std::move(kept);
      }
    });
    if (items.empty()) {
      render_list(otherwise, st, scope);
      return;
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      Scope iteration{&scope, {}};
      guarded(st, line, [&] { assign_targets(targets, items[static_cast<size_t>(i)], iteration); });
      auto loop = std::make_shared<Dict>();
      loop->set(Value::string("index"), Value::integer(i + 1));
      loop->set(Value::string("index0"), Value::integer(i));
      loop->set(Value::string("revindex"), Value::integer(length - i));
      loop->set(Value::string("revindex0"), Value::integer(length - i - 1));
      loop->set(Value::string("first"), Value::boolean(i == 0));
      loop->set(Value::string("last"), Value::boolean(i == length - 1));
      loop->set(Value::string("length"), Value::integer(length));
      loop->set(Value::string("depth"), Value::integer(1));
      loop->set(Value::string("depth0"), Value::integer(0));
      loop->set(Value::string("previtem"),
                i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item"));
      loop->set(Value::string("nextitem"),
                i + 1 < length ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item"));
      loop->set(Value::string("cycle"), Value::function(
                                            [i](CallArgs& a) {
                                              if (a.positional.empty()) eval_fail("no items for cycling given");
                                              return a.positional[static_cast<size_t>(i) % a.positional.size()];
                                            },
                                            "cycle"));
      iteration.set("loop", Value::dict(std::move(loop)));
      render_list(body, st, iteration);
      if (st.flow == Flow::Break) {
        st.flow = Flow::Normal;
        break;
      }
      st.flow = Flow::Normal;
    }
  }
};

struct SetNode : Node {
  std::vector<std::string> targets;  // names; or {namespace, attribute} when is_attribute
  bool is_attribute = false;
  ExprPtr value;  // null: block set
  NodeList body;
  void render(RenderState& st, Scope& scope) const override {
    Value result;
    if (value) {
      guarded(st, line, [&] { result = value->eval(st, scope); });
    } else {
      std::string saved;
      std::swap(saved, st.out);
      render_list(body, st, scope);
      std::swap(saved, st.out);
      result = Value::string(saved);
    }
    guarded(st, line, [&] {
      if (!is_attribute) {
        assign_targets(targets, result, scope);
        return;
      }
      Value* object = scope.find(targets[0]);
      if (!object || object->kind() != Value::Kind::Namespace)
        eval_fail(str("cannot assign attribute on non-namespace object '", targets[0], "'"));
      object->as_dict().set(Value::string(targets[1]), result);
    });
  }
};

struct MacroNode : Node {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  NodeList body;
  void render(RenderState& st, Scope& scope) const override {
    RenderState* state = &st;
    const MacroNode* self = this;
    scope.set(name, Value::function(
                        [state, self](CallArgs& args) {
                          RenderState& s = *state;
                          if (++s.macro_depth > 64) eval_fail("macro recursion is too deep");
                          Scope local{s.root, {}};
                          if (args.positional.size() > self->params.size())
                            eval_fail(str("macro '", self->name, "' takes not more than ", self->params.size(),
                                          " argument(s)"));
                          for (size_t i = 0; i < self->params.size(); ++i) {
                            const auto& [param, fallback] = self->params[i];
                            Value v = args.get(i, param.c_str());
                            if (!args.has(i, param.c_str()) && fallback) v = fallback->eval(s, local);
                            local.set(param, v);
                          }
                          for (const auto& keyword : args.keywords) {
                            bool known = false;
                            for (const auto& param : self->params) known = known || param.first == keyword.first;
                            if (!known) eval_fail(str("macro '", self->name, "' takes no keyword argument '", keyword.first, "'"));
                          }
                          std::string saved;
                          std::swap(saved, s.out);
                          render_list(self->body, s, local);
                          std::swap(saved, s.out);
                          s.flow = Flow::Normal;
                          --s.macro_depth;
                          return Value::string(saved);
                        },
                        name));
  }
};

struct GenerationNode : Node {
  NodeList body;
  void render(RenderState& st, Scope& scope) const override {
    const size_t begin = st.out.size();
    render_list(body, st, scope);
    if (st.spans) st.spans->push_back({begin, st.out.size()});
  }
};

struct FlowNode : Node {
  Flow flow;
  void render(RenderState& st, Scope&) const override { st.flow = flow; }
};

// --- parser -----------------------------------------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::vector<Item> items, const std::string& name) : items_(std::move(items)), name_(name) {}

  NodeList parse_template(bool* has_generation) {
    std::string end;
    NodeList nodes = parse_body({}, &end);
    *has_generation = has_generation_;
    return nodes;
  }

 private:
  [[noreturn]] void fail_at(int line, const std::string& message) const {
    throw TemplateError(str(name_, ":", line, ": ", message));
  }

  // --- statements ---

  // Parses items until a block whose keyword is in `ends` (left as the current item, its keyword consumed).
  NodeList parse_body(std::initializer_list<const char*> ends, std::string* found) {
    NodeList nodes;
    while (item_ < items_.size()) {
      Item& item = items_[item_];
      if (item.kind == Item::Text) {
        auto node = std::make_unique<TextNode>();
        node->line = item.line;
        node->text = item.text;
        nodes.push_back(std::move(node));
        ++item_;
        continue;
      }
      tokens_ = &item.tokens;
      pos_ = 0;
      if (item.kind == Item::Print) {
        auto node = std::make_unique<PrintNode>();
        node->line = item.line;
        node->expr = parse_tuple(true, false);
        expect_end();
        nodes.push_back(std::move(node));
        ++item_;
        continue;
      }
      if (current().type != Tok::Name) fail_at(item.line, "expected a statement name after {%");
      const std::string keyword = current().text;
      for (const char* end : ends)
        if (keyword == end) {
          ++pos_;
          *found = keyword;
          return nodes;
        }
      ++pos_;
      ++item_;
      nodes.push_back(parse_statement(keyword, item.line));
    }
    if (ends.size() > 0) {
      std::string expected;
      for (const char* end : ends) expected += (expected.empty() ? "" : " or ") + std::string(end);
      fail_at(items_.empty() ? 1 : items_.back().line, str("unexpected end of template, expected ", expected));
    }
    return nodes;
  }

  // After parse_body stopped at an end keyword: the rest of that tag must be empty; moves past it.
  void finish_tag() {
    expect_end();
    ++item_;
  }

  NodePtr parse_statement(const std::string& keyword, int line) {
    if (keyword == "if") return parse_if(line);
    if (keyword == "for") return parse_for(line);
    if (keyword == "set") return parse_set(line);
    if (keyword == "macro") return parse_macro(line);
    if (keyword == "generation") {
      auto node = std::make_unique<GenerationNode>();
      node->line = line;
      expect_end_of(line);
      std::string end;
      node->body = parse_body({"endgeneration"}, &end);
      finish_tag();
      has_generation_ = true;
      return node;
    }
    if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) fail_at(line, str("'", keyword, "' outside of a for loop"));
      auto node = std::make_unique<FlowNode>();
      node->line = line;
      node->flow = keyword == "break" ? Flow::Break : Flow::Continue;
      expect_end_of(line);
      return node;
    }
    if (keyword.rfind("end", 0) == 0 || keyword == "elif" || keyword == "else")
      fail_at(line, str("unexpected '", keyword, "' (no open block it could close)"));
    fail_at(line, str("unsupported statement '", keyword, "'"));
  }

  void expect_end_of(int line) {
    if (current().type != Tok::End) fail_at(line, str("unexpected '", describe(current()), "' at the end of the tag"));
  }

  NodePtr parse_if(int line) {
    auto node = std::make_unique<IfNode>();
    node->line = line;
    ExprPtr test = parse_tuple(false, false);
    expect_end();
    for (;;) {
      std::string end;
      NodeList body = parse_body({"elif", "else", "endif"}, &end);
      node->branches.emplace_back(std::move(test), std::move(body));
      if (end == "elif") {
        test = parse_tuple(false, false);
        finish_tag();
        continue;
      }
      if (end == "else") {
        finish_tag();
        node->otherwise = parse_body({"endif"}, &end);
      }
      finish_tag();
      return node;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool parenthesised = is_op("(");
    if (parenthesised) ++pos_;
    for (;;) {
      if (current().type != Tok::Name) fail_at(current().line, str("expected a name, found '", describe(current()), "'"));
      names.push_back(current().text);
      ++pos_;
      if (!is_op(",")) break;
      ++pos_;
      if (current().type != Tok::Name) break;
    }
    if (parenthesised) expect_op(")");
    return names;
  }

  NodePtr parse_for(int line) {
    auto node = std::make_unique<ForNode>();
    node->line = line;
    node->targets = parse_targets();
    if (!is_name("in")) fail_at(line, str("expected 'in' in the for statement, found '", describe(current()), "'"));
    ++pos_;
    node->iterable = parse_tuple(false, false, "recursive");
    if (is_name("if")) {
      ++pos_;
      node->filter = parse_expression(true);
    }
    if (is_name("recursive")) fail_at(line, "recursive for loops are not supported");
    expect_end();
    ++loop_depth_;
    std::string end;
    node->body = parse_body({"else", "endfor"}, &end);
    --loop_depth_;
    if (end == "else") {
      finish_tag();
      node->otherwise = parse_body({"endfor"}, &end);
    }
    finish_tag();
    return node;
  }

  NodePtr parse_set(int line) {
    auto node = std::make_unique<SetNode>();
    node->line = line;
    if (current().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
      node->is_attribute = true;
      node->targets.push_back(current().text);
      pos_ += 2;
      if (current().type != Tok::Name) fail_at(line, "expected an attribute name after '.'");
      node->targets.push_back(current().text);
      ++pos_;
    } else {
      node->targets = parse_targets();
    }
    if (is_op("=")) {
      ++pos_;
      node->value = parse_tuple(true, false);
      expect_end();
      return node;
    }
    if (node->is_attribute || node->targets.size() != 1) fail_at(line, "a block set assigns one name");
    if (is_op("|")) fail_at(line, "filtered block set is not supported");
    expect_end();
    std::string end;
    node->body = parse_body({"endset"}, &end);
    finish_tag();
    return node;
  }

  NodePtr parse_macro(int line) {
    auto node = std::make_unique<MacroNode>();
    node->line = line;
    if (current().type != Tok::Name) fail_at(line, "expected a macro name");
    node->name = current().text;
    ++pos_;
    expect_op("(");
    while (!is_op(")")) {
      if (!node->params.empty()) expect_op(",");
      if (is_op(")")) break;
      if (current().type != Tok::Name) fail_at(line, "expected a parameter name");
      std::string param = current().text;
      ++pos_;
      ExprPtr fallback;
      if (is_op("=")) {
        ++pos_;
        fallback = parse_expression(true);
      }
      node->params.emplace_back(std::move(param), std::move(fallback));
    }
    expect_op(")");
    expect_end();
    std::string end;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    node->body = parse_body({"endmacro"}, &end);
    loop_depth_ = saved_loop_depth;
    finish_tag();
    return node;
  }

  // --- expressions ---

  const Token& current() const { return (*tokens_)[std::min(pos_, tokens_->size() - 1)]; }
  const Token& peek() const { return (*tokens_)[std::min(pos_ + 1, tokens_->size() - 1)]; }
  bool is_op(const char* op) const { return current().type == Tok::Op && current().text == op; }
  bool is_name(const char* name) const { return current().type == Tok::Name && current().text == name; }

  static std::string describe(const Token& token) {
    switch (token.type) {
      case Tok::End: return "end of tag";
      case Tok::String: return "'" + token.text + "'";
      case Tok::Int: return std::to_string(token.integer);
      case Tok::Float: return detail::py_float_repr(token.number);
      default: return token.text;
    }
  }

  void expect_op(const char* op) {
    if (!is_op(op)) fail_at(current().line, str("expected '", op, "', found '", describe(current()), "'"));
    ++pos_;
  }

  void expect_end() {
    if (current().type != Tok::End) fail_at(current().line, str("unexpected '", describe(current()), "'"));
  }

  template <class T>
  std::unique_ptr<T> make(int line) {
    auto node = std::make_unique<T>();
    node->line = line;
    return node;
  }

  bool tuple_end(const char* extra_end) const {
    if (current().type == Tok::End || is_op(")")) return true;
    return extra_end && is_name(extra_end);
  }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parentheses, const char* extra_end = nullptr) {
    const int line = current().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    for (;;) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) fail_at(line, str("expected an expression, found '", describe(current()), "'"));
    }
    auto node = make<ListExpr>(line);
    node->items = std::move(items);
    node->tuple = true;
    return node;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const int line = current().line;
      ++pos_;
      auto node = make<CondExpr>(line);
      node->test = parse_or();
      if (is_name("else")) {
        ++pos_;
        node->otherwise = parse_condexpr();
      }
      node->then = std::move(expr);
      expr = std::move(node);
    }
    return expr;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto node = make<LogicExpr>(current().line);
      ++pos_;
      node->left = std::move(left);
      node->right = parse_and();
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto node = make<LogicExpr>(current().line);
      node->is_and = true;
      ++pos_;
      node->left = std::move(left);
      node->right = parse_not();
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      auto node = make<UnaryExpr>(current().line);
      ++pos_;
      node->op = "not";
      node->operand = parse_not();
      return node;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = current().line;
    ExprPtr first = parse_math1();
    std::vector<std::pair<std::string, ExprPtr>> ops;
    for (;;) {
      if (current().type == Tok::Op &&
          (current().text == "==" || current().text == "!=" || current().text == "<" || current().text == "<=" ||
           current().text == ">" || current().text == ">=")) {
        std::string op = current().text;
        ++pos_;
        ops.emplace_back(op, parse_math1());
      } else if (is_name("in")) {
        ++pos_;
        ops.emplace_back("in", parse_math1());
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        pos_ += 2;
        ops.emplace_back("notin", parse_math1());
      } else {
        break;
      }
    }
    if (ops.empty()) return first;
    auto node = make<CompareExpr>(line);
    node->first = std::move(first);
    node->ops = std::move(ops);
    return node;
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int line) {
    auto node = make<BinaryExpr>(line);
    node->op = std::move(op);
    node->left = std::move(left);
    node->right = std::move(right);
    return node;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = current().text;
      const int line = current().line;
      ++pos_;
      left = binary(op, std::move(left), parse_concat(), line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    const int line = current().line;
    std::vector<ExprPtr> parts;
    parts.push_back(parse_math2());
    while (is_op("~")) {
      ++pos_;
      parts.push_back(parse_math2());
    }
    if (parts.size() == 1) return std::move(parts[0]);
    auto node = make<ConcatExpr>(line);
    node->parts = std::move(parts);
    return node;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = current().text;
      const int line = current().line;
      ++pos_;
      left = binary(op, std::move(left), parse_pow(), line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const int line = current().line;
      ++pos_;
      left = binary("**", std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto unary = make<UnaryExpr>(current().line);
      unary->op = current().text;
      ++pos_;
      unary->operand = parse_unary(false);
      node = std::move(unary);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& token = current();
    const int line = token.line;
    switch (token.type) {
      case Tok::Name: {
        ++pos_;
        if (token.text == "true" || token.text == "True" || token.text == "false" || token.text == "False") {
          auto node = make<ConstExpr>(line);
          node->value = Value::boolean(token.text[0] == 't' || token.text[0] == 'T');
          return node;
        }
        if (token.text == "none" || token.text == "None") {
          auto node = make<ConstExpr>(line);
          node->value = Value::none();
          return node;
        }
        auto node = make<NameExpr>(line);
        node->name = token.text;
        return node;
      }
      case Tok::String: {
        std::string text;
        while (current().type == Tok::String) {
          text += current().text;
          ++pos_;
        }
        auto node = make<ConstExpr>(line);
        node->value = Value::string(std::move(text));
        return node;
      }
      case Tok::Int:
      case Tok::Float: {
        auto node = make<ConstExpr>(line);
        node->value = token.type == Tok::Int ? Value::integer(token.integer) : Value::number(token.number);
        ++pos_;
        return node;
      }
      case Tok::Op: {
        if (token.text == "(") {
          ++pos_;
          ExprPtr inner = parse_tuple(true, true);
          expect_op(")");
          return inner;
        }
        if (token.text == "[") {
          ++pos_;
          auto node = make<ListExpr>(line);
          while (!is_op("]")) {
            if (!node->items.empty()) expect_op(",");
            if (is_op("]")) break;
            node->items.push_back(parse_expression(true));
          }
          expect_op("]");
          return node;
        }
        if (token.text == "{") {
          ++pos_;
          auto node = make<DictExpr>(line);
          while (!is_op("}")) {
            if (!node->items.empty()) expect_op(",");
            if (is_op("}")) break;
            ExprPtr key = parse_expression(true);
            expect_op(":");
            node->items.emplace_back(std::move(key), parse_expression(true));
          }
          expect_op("}");
          return node;
        }
        break;
      }
      case Tok::End: break;
    }
    fail_at(line, str("unexpected '", describe(token), "'"));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    for (;;) {
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    for (;;) {
      if (is_op("|")) node = parse_filter(std::move(node));
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const int line = current().line;
    if (is_op(".")) {
      ++pos_;
      if (current().type == Tok::Name) {
        auto attr = make<AttrExpr>(line);
        attr->object = std::move(node);
        attr->name = current().text;
        ++pos_;
        return attr;
      }
      if (current().type == Tok::Int) {
        auto item = make<ItemExpr>(line);
        item->object = std::move(node);
        auto key = make<ConstExpr>(line);
        key->value = Value::integer(current().integer);
        item->key = std::move(key);
        ++pos_;
        return item;
      }
      fail_at(line, str("expected a name after '.', found '", describe(current()), "'"));
    }
    expect_op("[");
    ExprPtr start, stop, step;
    bool is_slice = false;
    if (!is_op(":")) start = parse_expression(true);
    if (is_op(":")) {
      is_slice = true;
      ++pos_;
      if (!is_op("]") && !is_op(":")) stop = parse_expression(true);
      if (is_op(":")) {
        ++pos_;
        if (!is_op("]")) step = parse_expression(true);
      }
    }
    if (is_op(",")) fail_at(line, "tuple subscripts are not supported");
    expect_op("]");
    if (!is_slice) {
      auto item = make<ItemExpr>(line);
      item->object = std::move(node);
      item->key = std::move(start);
      return item;
    }
    auto slice = make<SliceExpr>(line);
    slice->object = std::move(node);
    slice->start = std::move(start);
    slice->stop = std::move(stop);
    slice->step = std::move(step);
    return slice;
  }

  Arguments parse_arguments() {
    Arguments args;
    expect_op("(");
    while (!is_op(")")) {
      if (!args.positional.empty() || !args.keywords.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail_at(current().line, "*args and **kwargs in calls are not supported");
      if (current().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = current().text;
        pos_ += 2;
        args.keywords.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!args.keywords.empty()) fail_at(current().line, "positional argument after a keyword argument");
        args.positional.push_back(parse_expression(true));
      }
    }
    expect_op(")");
    return args;
  }

  ExprPtr parse_call(ExprPtr node) {
    auto call = make<CallExpr>(current().line);
    call->callee = std::move(node);
    call->args = parse_arguments();
    return call;
  }

  std::string dotted_name() {
    if (current().type != Tok::Name) fail_at(current().line, str("expected a name, found '", describe(current()), "'"));
    std::string name = current().text;
    ++pos_;
    while (is_op(".") && peek().type == Tok::Name) {
      name += "." + peek().text;
      pos_ += 2;
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr node) {
    const int line = current().line;
    ++pos_;  // '|'
    auto filter = make<FilterExpr>(line);
    filter->value = std::move(node);
    filter->name = dotted_name();
    if (!detail::has_filter(filter->name)) fail_at(line, str("unsupported filter '", filter->name, "'"));
    if (is_op("(")) filter->args = parse_arguments();
    return filter;
  }

  ExprPtr parse_test(ExprPtr node) {
    const int line = current().line;
    ++pos_;  // 'is'
    auto test = make<TestExpr>(line);
    test->value = std::move(node);
    if (is_name("not")) {
      test->negated = true;
      ++pos_;
    }
    test->name = dotted_name();
    if (!detail::has_test(test->name)) fail_at(line, str("unsupported test '", test->name, "'"));
    if (is_op("(")) {
      test->args = parse_arguments();
    } else if ((current().type == Tok::Name || current().type == Tok::String || current().type == Tok::Int ||
                current().type == Tok::Float || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail_at(line, "you cannot chain multiple tests with is");
      test->args.positional.push_back(parse_postfix(parse_primary()));
    }
    return test;
  }

  std::vector<Item> items_;
  const std::string& name_;
  size_t item_ = 0;
  std::vector<Token>* tokens_ = nullptr;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  bool has_generation_ = false;
};

// Jinja's source preparation: \r\n and \r become \n; one trailing newline is dropped (keep_trailing_newline=False).
std::string normalize_source(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

struct Template::Impl {
  std::string name;
  NodeList nodes;
  bool has_generation = false;
};

Template::Template(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

Template Template::parse(std::string_view source, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->name = std::move(name);
  if (!utf8::is_valid(source)) throw TemplateError(str(impl->name, ": the template is not valid UTF-8"));
  Lexer lexer(normalize_source(source), impl->name);
  Parser parser(lexer.run(), impl->name);
  impl->nodes = parser.parse_template(&impl->has_generation);
  return Template(std::move(impl));
}

const std::string& Template::name() const { return impl_->name; }
bool Template::has_generation_blocks() const { return impl_->has_generation; }

std::string Template::render(const Value& variables, std::vector<GenerationSpan>* spans) const {
  RenderState state{impl_->name, {}, spans};
  Scope root;
  state.root = &root;
  if (variables.is_dict())
    for (const auto& [key, value] : variables.as_dict().items)
      if (key.is_string()) root.vars.emplace_back(key.as_string(), value);
  render_list(impl_->nodes, state, root);
  return std::move(state.out);
}

}  // namespace moetune::jinja

// Why: a tokenizer.json that moetune cannot read exactly as Hugging Face does must fail with one line naming the file
// and the JSON path of the field ("model.merges[12]", "pre_tokenizer.pretokenizers[0].behavior"), never with a
// nlohmann exception text. JsonAt carries the file name and the path down the tree; every read goes through it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "core/error.h"

namespace moetune::tokenizer_json {

class JsonAt {
 public:
  JsonAt(const nlohmann::json& value, std::string file, std::string path)
      : value_(&value), file_(std::move(file)), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *value_; }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    moetune::fail(file_, ": ", path_.empty() ? std::string("(top level)") : path_, ": ",
                  std::forward<Parts>(parts)...);
  }

  bool has(const char* key) const { return value_->is_object() && value_->contains(key); }
  // A member that is present and not null.
  bool has_value(const char* key) const { return has(key) && !(*value_)[key].is_null(); }

  JsonAt at(const char* key) const {
    expect_object();
    auto it = value_->find(key);
    if (it == value_->end()) JsonAt(*value_, file_, child_path(key)).fail("missing");
    return JsonAt(*it, file_, child_path(key));
  }
  JsonAt at(size_t index) const {
    expect_array();
    return JsonAt((*value_)[index], file_, path_ + "[" + std::to_string(index) + "]");
  }
  size_t size() const {
    if (!value_->is_array() && !value_->is_object()) fail("expected an array or object, found ", type_name());
    return value_->size();
  }

  std::string as_string() const {
    if (!value_->is_string()) fail("expected a string, found ", type_name());
    return value_->get<std::string>();
  }
  bool as_bool() const {
    if (!value_->is_boolean()) fail("expected true or false, found ", type_name());
    return value_->get<bool>();
  }
  int64_t as_int() const {
    if (!value_->is_number_integer()) fail("expected an integer, found ", type_name());
    return value_->get<int64_t>();
  }
  double as_number() const {
    if (!value_->is_number()) fail("expected a number, found ", type_name());
    return value_->get<double>();
  }
  // Optional members with defaults (absent or null -> default), as serde's #[serde(default)] reads them.
  bool bool_or(const char* key, bool fallback) const { return has_value(key) ? at(key).as_bool() : fallback; }
  std::string string_or(const char* key, const std::string& fallback) const {
    return has_value(key) ? at(key).as_string() : fallback;
  }

  void expect_object() const {
    if (!value_->is_object()) fail("expected an object, found ", type_name());
  }
  void expect_array() const {
    if (!value_->is_array()) fail("expected an array, found ", type_name());
  }
  std::string type_name() const { return value_->type_name(); }

 private:
  std::string child_path(const char* key) const { return path_.empty() ? std::string(key) : path_ + "." + key; }

  const nlohmann::json* value_;
  std::string file_;
  std::string path_;
};

}  // namespace moetune::tokenizer_json

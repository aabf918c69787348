// Why: the tokenizer pipeline hands every piece of text to the next stage through a callback (so no stage allocates a
// list of all pieces of a 20 MB document). std::function would allocate and copy; this non-owning reference does not.
// It must not outlive the callable it refers to, which is always a lambda on the caller's stack here.
#pragma once

#include <type_traits>
#include <utility>

namespace moetune {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): passed as a lambda at every call site
      : object_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace moetune

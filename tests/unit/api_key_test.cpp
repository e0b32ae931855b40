#include "filters/api_key/key_store.h"

#include <gtest/gtest.h>

namespace sluice::filters::api_key {
namespace {

TEST(ApiKeyStore, HashHex) {
  // sha256("test"), as `printf %s test | sha256sum` prints it.
  EXPECT_EQ(KeyStore::hashHex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
}

TEST(ApiKeyStore, ParseAndLookup) {
  const std::string text =
      "# keys for the billing API\n"
      "\n"
      "billing: " +
      KeyStore::hashHex("key-one") +
      "\r\n"
      "  reports.v2 :\t" +
      KeyStore::hashHex("key-two") +
      "  \n"
      "   # an indented comment\n"
      "UPPER_hex: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
  KeyStoreResult r = KeyStore::parse(text, "keys.txt");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  const KeyStore& store = *r.store;
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.lookup("key-one"), "billing");
  EXPECT_EQ(store.lookup("key-two"), "reports.v2");
  EXPECT_EQ(store.lookup("test"), "UPPER_hex");
  EXPECT_FALSE(store.lookup("key-three"));
  EXPECT_FALSE(store.lookup("key-one "));
  EXPECT_FALSE(store.lookup(""));
  // The hash itself is not a key.
  EXPECT_FALSE(store.lookup(KeyStore::hashHex("key-one")));
}

TEST(ApiKeyStore, EmptyFileMatchesNothing) {
  KeyStoreResult r = KeyStore::parse("# nothing yet\n", "keys.txt");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.store->size(), 0u);
  EXPECT_FALSE(r.store->lookup("anything"));
}

TEST(ApiKeyStore, EveryErrorWithFileAndLine) {
  const std::string h1 = KeyStore::hashHex("one");
  const std::string text =
      "a: " + h1 +
      "\n"               // 1 ok
      "no colon here\n"  // 2
      "bad name!: " +
      KeyStore::hashHex("x") +
      "\n"                                                                   // 3
      "short: abc123\n"                                                      // 4
      "plain: my-secret-api-key-in-plaintext-is-wrong-0123456789abcdefgh\n"  // 5
      "a: " +
      KeyStore::hashHex("two") +
      "\n"  // 6 duplicate name
      "b: " +
      h1 +
      "\n"  // 7 duplicate hash
      "empty: " +
      KeyStore::hashHex("") +
      "\n"  // 8 hash of ""
      ": " +
      KeyStore::hashHex("y") +
      "\n"  // 9 no name
      "long: " +
      h1 + "00\n";  // 10
  KeyStoreResult r = KeyStore::parse(text, "/etc/sluice/keys");
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 9u);
  const char* expected[] = {
      ":2: ", ":3: ", ":4: ", ":5: ", ":6: ", ":7: ", ":8: ", ":9: ", ":10: "};
  for (size_t i = 0; i < r.errors.size(); ++i) {
    EXPECT_EQ(r.errors[i].rfind("/etc/sluice/keys", 0), 0u) << r.errors[i];
    EXPECT_NE(r.errors[i].find(expected[i]), std::string::npos) << r.errors[i];
  }
  EXPECT_NE(r.errors[4].find("twice"), std::string::npos) << r.errors[4];
  EXPECT_NE(r.errors[5].find("same hash"), std::string::npos) << r.errors[5];
  // A plaintext key never appears in an error message.
  for (const std::string& e : r.errors) {
    EXPECT_EQ(e.find("my-secret"), std::string::npos) << e;
  }
}

TEST(ApiKeyStore, ManyKeys) {
  std::string text;
  for (int i = 0; i < 500; ++i) {
    text +=
        "k" + std::to_string(i) + ": " + KeyStore::hashHex("secret-" + std::to_string(i)) + "\n";
  }
  KeyStoreResult r = KeyStore::parse(text, "keys");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.store->lookup("secret-0"), "k0");
  EXPECT_EQ(r.store->lookup("secret-499"), "k499");
  EXPECT_EQ(r.store->lookup("secret-250"), "k250");
  EXPECT_FALSE(r.store->lookup("secret-500"));
}

}  // namespace
}  // namespace sluice::filters::api_key

/*
 * debx runtime: DeBERTa-v2/v3 tokenization in C++, equal to transformers' DebertaV2Tokenizer.
 *
 * The SentencePiece library loads spm.model and provides the vocabulary (pieces, scores, special ids). The pipeline
 * on top of it is transformers':
 *   1. split out the special tokens ([PAD] [CLS] [SEP] [UNK] [MASK]) written in the text,
 *   2. normalize each remaining segment (the step where transformers 4 and 5 differ, see Normalization),
 *   3. pre-tokenize like Metaspace: " " -> "▁", a "▁" prepended, words split before each "▁",
 *   4. segment every word with Unigram Viterbi over the spm pieces and scores, unknown characters as [UNK]
 *      (no byte fallback, consecutive unknowns fused),
 * and build [CLS] a [SEP] (b [SEP]) with "longest first" truncation.
 *
 * Normalization differs between the transformers versions that wrote (and trained with) a checkpoint:
 *   transformers 5  DebertaV2Tokenizer rebuilds its normalizer in code: runs of 2+ whitespace and single \n \r \t
 *                   -> " ", Unicode NFC, strip right. No NFKC: "µ", "ﬁ", "½", "…", full-width letters stay as they
 *                   are (mostly [UNK]). It ignores the normalizer stored in tokenizer.json.
 *   transformers 4  DebertaV2TokenizerFast (AutoTokenizer's choice) uses tokenizer.json's normalizer, converted from
 *                   spm.model: strip both ends, the model's precompiled NFKC charsmap ("µ" -> "μ", "ﬁ" -> "fi",
 *                   "½" -> "1⁄2", "…" -> "...", "Ａ" -> "A"), then runs of 2+ spaces -> " ".
 * Normalization::kAuto (the default) reads which one from the checkpoint folder (the folder given, or the one
 * holding spm.model): tokenizer.json's normalizer (a Precompiled step: transformers 4; NFC: transformers 5), else the
 * transformers_version recorded in config.json, else transformers 5. Explicit modes override it.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace sentencepiece
{
class SentencePieceProcessor;
}

namespace debx
{
namespace runtime
{

enum class Normalization
{
    kAuto,          //!< chosen from the checkpoint's files (see the top of this header); the default
    kTransformers,  //!< transformers >= 5: whitespace runs, NFC, strip right
    kTransformers4, //!< transformers 4.x (DebertaV2TokenizerFast): strip, the precompiled NFKC charsmap, space runs
    kSentencePiece, //!< SentencePiece's own Encode(): the model's charsmap and byte fallback (neither transformers)
};

//! "transformers5", "transformers4", "sentencepiece" or "auto".
char const* normalizationName(Normalization mode);

//! The normalization a checkpoint folder asks for and why (one line, naming the file that decided). Throws
//! std::runtime_error when tokenizer.json holds a normalizer the C++ tokenizer does not reproduce, or asks for
//! lower-casing or punctuation splitting.
std::pair<Normalization, std::string> checkpointNormalization(std::string const& folder);

//! One encoded example (or one padded row of a batch).
struct Encoding
{
    std::vector<int64_t> inputIds;
    std::vector<int64_t> tokenTypeIds;
    std::vector<int64_t> attentionMask;
};

//! Thread safety: after construction a tokenizer keeps no state that tokenize(), encode() or padBatch() change (they
//! are const; SentencePiece's processor is only read), so one instance may be shared by any number of threads
//! (tests/plugins/test_runtime_install.py checks 8 threads against a single-threaded pass). Construction and
//! destruction must not overlap a call.
class DebertaTokenizer
{
public:
    //! `path`: spm.model, or a checkpoint folder holding it. kAuto reads the normalization from that folder
    //! (checkpointNormalization). Throws std::runtime_error with the reason when the model cannot be loaded.
    explicit DebertaTokenizer(std::string const& path, Normalization mode = Normalization::kAuto);
    ~DebertaTokenizer();

    //! The normalization in use (never kAuto) and why it was chosen.
    Normalization normalization() const
    {
        return mMode;
    }
    std::string const& normalizationReason() const
    {
        return mModeReason;
    }

    //! Token ids of a text without special tokens added.
    std::vector<int64_t> tokenize(std::string const& text) const;

    //! [CLS] a [SEP] or [CLS] a [SEP] b [SEP], truncated to maxLength tokens ("longest first" for pairs).
    //! Throws std::invalid_argument when maxLength cannot hold the special tokens.
    Encoding encode(std::string const& text, std::string const* textPair, int32_t maxLength) const;

    //! Right-pad every row to the longest one: [PAD], attention 0, token type 0.
    void padBatch(std::vector<Encoding>& batch) const;

    int64_t padId() const
    {
        return mPadId;
    }
    int64_t clsId() const
    {
        return mClsId;
    }
    int64_t sepId() const
    {
        return mSepId;
    }
    int64_t unkId() const
    {
        return mUnkId;
    }
    int64_t maskId() const
    {
        return mMaskId;
    }

private:
    struct SpecialToken
    {
        std::string text;
        int64_t id;
        bool normalized; //!< matched in the normalized text (tokenizer.json's added_tokens "normalized"), else raw
    };
    //! Calls onText for the text between special tokens (those whose `normalized` flag is `normalized`) and onId
    //! for each special token, in order.
    template <typename OnText, typename OnId>
    void splitSpecials(std::string const& text, bool normalized, OnText onText, OnId onId) const;
    std::string normalize(std::string const& segment) const;
    void pretokenizeAndSegment(std::string const& normalized, std::vector<int64_t>& out) const;
    std::string normalizeCharsmap(std::string const& segment) const;
    void viterbi(std::string const& word, std::vector<int64_t>& out) const;

    std::unique_ptr<sentencepiece::SentencePieceProcessor> mProcessor;
    Normalization mMode;
    std::string mModeReason;
    std::vector<uint32_t> mCharsmapTrie; // kTransformers4: the precompiled charsmap's double-array trie
    std::string mCharsmapStrings;        // ... and its replacement strings (NUL-separated)
    std::unordered_map<std::string, std::pair<int64_t, double>> mPieces; // piece -> (id, score)
    std::vector<SpecialToken> mSpecialTokens;
    size_t mMaxPieceBytes{0};
    double mUnkScore{0.0};
    int64_t mPadId{0};
    int64_t mClsId{1};
    int64_t mSepId{2};
    int64_t mUnkId{3};
    int64_t mMaskId{-1};
};

//! "longest first" truncation of a pair to a total of `budget` content tokens (transformers' rule): returns the
//! kept lengths (first, second).
std::pair<size_t, size_t> truncatedPairLengths(size_t first, size_t second, size_t budget);

} // namespace runtime
} // namespace debx

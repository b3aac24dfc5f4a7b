/*
 * debx runtime: DeBERTa-v2/v3 tokenization in C++, equal to transformers' DebertaV2Tokenizer.
 *
 * The SentencePiece library loads spm.model and provides the vocabulary (pieces, scores, special ids). Since
 * transformers 5, DebertaV2Tokenizer does not run SentencePiece's own normalizer: it
 *   1. splits out the special tokens ([PAD] [CLS] [SEP] [UNK] [MASK]) written in the text,
 *   2. normalizes each remaining segment: runs of 2+ whitespace and single \n \r \t -> " ", Unicode NFC, strip right,
 *   3. pre-tokenizes like Metaspace: " " -> "▁", a "▁" prepended, words split before each "▁",
 *   4. segments every word with Unigram Viterbi over the spm pieces and scores, unknown characters as [UNK]
 *      (no byte fallback, consecutive unknowns fused),
 * and builds [CLS] a [SEP] (b [SEP]) with "longest first" truncation. SentencePiece's own Encode() (NFKC charsmap,
 * byte fallback) differs on e.g. "µ", full-width letters and mojibake, so kTransformers reimplements that
 * pipeline on top of the library; kSentencePiece uses Encode() itself.
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
    kTransformers,  //!< what transformers' DebertaV2Tokenizer (>= 5) produces (default)
    kSentencePiece, //!< SentencePiece's Encode(): the model's NFKC charsmap and byte fallback
};

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
    //! Loads spm.model; throws std::runtime_error with the reason when it cannot.
    explicit DebertaTokenizer(std::string const& spmModelPath, Normalization mode = Normalization::kTransformers);
    ~DebertaTokenizer();

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
    void tokenizeSegment(std::string const& segment, std::vector<int64_t>& out) const;
    void viterbi(std::string const& word, std::vector<int64_t>& out) const;

    std::unique_ptr<sentencepiece::SentencePieceProcessor> mProcessor;
    Normalization mMode;
    std::unordered_map<std::string, std::pair<int64_t, double>> mPieces; // piece -> (id, score)
    std::vector<std::pair<std::string, int64_t>> mSpecialTokens;        // text -> id, matched before normalizing
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

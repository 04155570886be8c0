# The MiniLM tokenizer.json cut to a small vocabulary (specials, single characters and their ## forms, frequent
# words), renumbered from 0: the fuzz targets load a tokenizer on every iteration, so it must be small.
. as $doc
| [ "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" ] as $special
| ($doc.model.vocab | to_entries | sort_by(.value)
   | map(select((.key | test("^(##)?[a-z0-9.,!?'\"();:-]$")) or (.value >= 1996 and .value < 2150)) | .key)) as $rest
| ($special + ($rest - $special) | to_entries | map({key: .value, value: .key}) | from_entries) as $ids
| $doc
| .model.vocab = $ids
| .added_tokens |= map(.id = $ids[.content])
| .post_processor.special_tokens |= with_entries(.value.ids = [$ids[.key]])
| .truncation = null
| .padding = null

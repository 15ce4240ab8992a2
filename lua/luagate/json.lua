-- JSON through lua-cjson. encode raises on values JSON cannot hold (a programmer's mistake);
-- decode returns nil, err on bad input (the client's or the upstream's mistake).
local cjson = require "cjson"
local safe = require "cjson.safe"

local encoder = cjson.new()
encoder.encode_sparse_array(true)    -- {[1]=1,[3]=3} -> [1,null,3] rather than an error
encoder.encode_number_precision(14)
local decoder = safe.new()
decoder.decode_max_depth(100)

local M = { null = cjson.null }

-- Note: an empty Lua table has no way to say whether it is a list, and is sent as {}.
function M.encode(value) return encoder.encode(value) end

function M.decode(text)
  if type(text) ~= "string" then return nil, "expected a JSON string, got " .. type(text) end
  local v, err = decoder.decode(text)
  if v == nil and err then return nil, "invalid JSON: " .. err end
  return v
end

return M

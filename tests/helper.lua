-- tests/helper.lua: loaded by busted before every spec (see tests/run).
-- Specs find their own helpers under tests/support/ (require "tests.support.x").
package.path = "./?.lua;" .. package.path

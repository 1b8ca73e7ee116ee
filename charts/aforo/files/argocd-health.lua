-- Argo CD health check for aforo.io resources (MeteringPipeline, Meter,
-- Product, RatePlan, WebhookSource, UsageAlert). Install it in argocd-cm as
-- resource.customizations.health.aforo.io_<Kind> for each kind (see
-- docs/operator.md). It reads the same conditions kstatus (Flux) reads:
--   Paused=True                        -> Suspended
--   Stalled=True                       -> Degraded
--   observedGeneration < generation    -> Progressing
--   Ready=True                         -> Healthy
--   otherwise                          -> Progressing
local hs = {}
local function text(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  return reason .. message
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the aforo operator to report a status"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Paused" and condition.status == "True" then
    hs.status = "Suspended"
    hs.message = text(condition)
    return hs
  end
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = text(condition)
    return hs
  end
  if condition.type == "Ready" then
    ready = condition
  end
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the aforo operator to observe generation " .. generation
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = text(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs

package fedgepb

// Features a device lists in Capabilities.features, and a run in
// RunConfig.required_features of the devices it selects.
const (
	// FeatureSecAgg: the agent takes part in SecAgg+ rounds (tasks with
	// SecAggParams and the secagg message stages).
	FeatureSecAgg = "secagg"
)

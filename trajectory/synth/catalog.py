"""What the synthetic tables are made of: the planted signal's sizes, MIMIC-IV v2.2 (and
MIMIC-IV-Note) headers in column order, real itemids, codes, units and note texts.
Data only."""
from __future__ import annotations

DAY, HOUR, MIN = 86400, 3600, 60
# Strong enough that logistic regression on a few hundred stays finds it (held-out AUROC ~0.9
# on 500 patients at death_rate 0.5), weak enough to overlap survivors (per-stay spread).
SIGNAL_SBP_DROP = 20.0  # mmHg of systolic pressure lost over the first 24 h by ICU deaths
SIGNAL_LACTATE = (1.8, 3.5)  # mmol/L at ICU admission and at + 24 h, ICU deaths (median)
SIGNAL_LACTATE_NORMAL = 1.4  # mmol/L, median of everyone else's ICU lactates
SIGNAL_LACTATE_SD = 0.35  # log-scale spread: per stay (survivors) and per draw (everyone)


def _rows(block: str) -> list[list[str]]:
    return [line.split("|") for line in block.strip("\n").splitlines()]


# MIMIC-IV v2.2 column order, exactly (procedureevents' upper-case tail included).
HEADERS = dict(line.split(" ") for line in """\
hosp/patients subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
hosp/admissions subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag
hosp/transfers subject_id,hadm_id,transfer_id,eventtype,careunit,intime,outtime
hosp/services subject_id,hadm_id,transfertime,prev_service,curr_service
hosp/labevents labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments
hosp/microbiologyevents microevent_id,subject_id,hadm_id,micro_specimen_id,order_provider_id,chartdate,charttime,spec_itemid,spec_type_desc,test_seq,storedate,storetime,test_itemid,test_name,org_itemid,org_name,isolate_num,quantity,ab_itemid,ab_name,dilution_text,dilution_comparison,dilution_value,interpretation,comments
hosp/diagnoses_icd subject_id,hadm_id,seq_num,icd_code,icd_version
hosp/procedures_icd subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version
hosp/hcpcsevents subject_id,hadm_id,chartdate,hcpcs_cd,seq_num,short_description
hosp/drgcodes subject_id,hadm_id,drg_type,drg_code,description,drg_severity,drg_mortality
hosp/prescriptions subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,starttime,stoptime,drug_type,drug,formulary_drug_cd,gsn,ndc,prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,form_unit_disp,doses_per_24_hrs,route
hosp/pharmacy subject_id,hadm_id,pharmacy_id,poe_id,starttime,stoptime,medication,proc_type,status,entertime,verifiedtime,route,frequency,disp_sched,infusion_type,sliding_scale,lockout_interval,basal_rate,one_hr_max,doses_per_24_hrs,duration,duration_interval,expiration_value,expiration_unit,expirationdate,dispensation,fill_quantity
hosp/emar subject_id,hadm_id,emar_id,emar_seq,poe_id,pharmacy_id,enter_provider_id,charttime,medication,event_txt,scheduletime,storetime
hosp/poe poe_id,poe_seq,subject_id,hadm_id,ordertime,order_type,order_subtype,transaction_type,discontinue_of_poe_id,discontinued_by_poe_id,order_provider_id,order_status
hosp/omr subject_id,chartdate,seq_num,result_name,result_value
hosp/emar_detail subject_id,emar_id,emar_seq,parent_field_ordinal,administration_type,pharmacy_id,barcode_type,reason_for_no_barcode,complete_dose_not_given,dose_due,dose_due_unit,dose_given,dose_given_unit,will_remainder_of_dose_be_given,product_amount_given,product_unit,product_code,product_description,product_description_other,prior_infusion_rate,infusion_rate,infusion_rate_adjustment,infusion_rate_adjustment_amount,infusion_rate_unit,route,infusion_complete,completion_interval,new_iv_bag_hung,continued_infusion_in_other_location,restart_interval,side,site,non_formulary_visual_verification
hosp/poe_detail poe_id,poe_seq,subject_id,field_name,field_value
hosp/provider provider_id
hosp/d_labitems itemid,label,fluid,category
hosp/d_icd_diagnoses icd_code,icd_version,long_title
hosp/d_icd_procedures icd_code,icd_version,long_title
hosp/d_hcpcs code,category,long_description,short_description
icu/icustays subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los
icu/chartevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning
icu/datetimeevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom,warning
icu/inputevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,amount,amountuom,rate,rateuom,orderid,linkorderid,ordercategoryname,secondaryordercategoryname,ordercomponenttypedescription,ordercategorydescription,patientweight,totalamount,totalamountuom,isopenbag,continueinnextdept,statusdescription,originalamount,originalrate
icu/ingredientevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,amount,amountuom,rate,rateuom,orderid,linkorderid,statusdescription,originalamount,originalrate
icu/outputevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom
icu/procedureevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,value,valueuom,location,locationcategory,orderid,linkorderid,ordercategoryname,ordercategorydescription,patientweight,isopenbag,continueinnextdept,statusdescription,ORIGINALAMOUNT,ORIGINALRATE
icu/d_items itemid,label,abbreviation,linksto,category,unitname,param_type,lownormalvalue,highnormalvalue
icu/caregiver caregiver_id
note/discharge note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
note/radiology note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
note/discharge_detail note_id,subject_id,field_name,field_value,field_ordinal
note/radiology_detail note_id,subject_id,field_name,field_value,field_ordinal
""".splitlines())  # noqa: E501

# itemid|label|abbreviation|linksto|category|unitname|param_type, as in MIMIC-IV's d_items
D_ITEMS = _rows("""
220045|Heart Rate|HR|chartevents|Routine Vital Signs|bpm|Numeric
220179|Non Invasive Blood Pressure systolic|NBPs|chartevents|Routine Vital Signs|mmHg|Numeric
220180|Non Invasive Blood Pressure diastolic|NBPd|chartevents|Routine Vital Signs|mmHg|Numeric
220181|Non Invasive Blood Pressure mean|NBPm|chartevents|Routine Vital Signs|mmHg|Numeric
220050|Arterial Blood Pressure systolic|ABPs|chartevents|Routine Vital Signs|mmHg|Numeric
220051|Arterial Blood Pressure diastolic|ABPd|chartevents|Routine Vital Signs|mmHg|Numeric
220052|Arterial Blood Pressure mean|ABPm|chartevents|Routine Vital Signs|mmHg|Numeric
220210|Respiratory Rate|RR|chartevents|Respiratory|insp/min|Numeric
220277|O2 saturation pulseoxymetry|SpO2|chartevents|Respiratory|%|Numeric
223761|Temperature Fahrenheit|Temperature F|chartevents|Routine Vital Signs|°F|Numeric
223762|Temperature Celsius|Temperature C|chartevents|Routine Vital Signs|°C|Numeric
224639|Daily Weight|Daily Weight|chartevents|General|kg|Numeric
226512|Admission Weight (Kg)|Admission Weight (Kg)|chartevents|General|kg|Numeric
226707|Height|Height|chartevents|General|Inch|Numeric
226730|Height (cm)|Height (cm)|chartevents|General|cm|Numeric
223835|Inspired O2 Fraction|FiO2|chartevents|Respiratory|%|Numeric
220739|GCS - Eye Opening|Eye Opening|chartevents|Neurological||Text
223900|GCS - Verbal Response|Verbal Response|chartevents|Neurological||Text
223901|GCS - Motor Response|Motor Response|chartevents|Neurological||Text
220621|Glucose (serum)|Glucose (serum)|chartevents|Labs|mg/dL|Numeric
220048|Heart Rhythm|Heart Rhythm|chartevents|Routine Vital Signs||Text
224650|Ectopy Type 1|Ectopy Type 1|chartevents|Routine Vital Signs||Text
224288|Arterial line Insertion Date|Arterial line Insertion Date|datetimeevents|Access Lines - Invasive||Date and time
224290|Arterial line Tubing Change|Arterial line Tubing Change|datetimeevents|Access Lines - Invasive||Date and time
224280|Multi Lumen Insertion Date|Multi Lumen Insertion Date|datetimeevents|Access Lines - Invasive||Date and time
225754|20 Gauge Insertion Date|20 Gauge Insertion Date|datetimeevents|Access Lines - Peripheral||Date and time
220949|Dextrose 5%|Dextrose 5%|inputevents|Fluids/Intake|mL|Solution
225158|NaCl 0.9%|NaCl 0.9%|inputevents|Fluids/Intake|mL|Solution
225828|LR|LR|inputevents|Fluids/Intake|mL|Solution
221906|Norepinephrine|Norepinephrine|inputevents|Medications|mg|Solution
222168|Propofol|Propofol|inputevents|Medications|mg|Solution
225798|Vancomycin|Vancomycin|inputevents|Antibiotics|dose|Solution
225166|Potassium Chloride|Potassium Chloride - KCL|inputevents|Medications|mEq|Solution
220490|Water|H2O|ingredientevents|Ingredients|mL|Ingredient
226559|Foley|Foley|outputevents|Output|mL|Numeric
226560|Void|Void|outputevents|Output|mL|Numeric
226588|Chest Tube #1|Chest Tube #1|outputevents|Output|mL|Numeric
225459|Chest X-Ray|Chest X-Ray|procedureevents|5-Imaging|None|Processes
225402|EKG|EKG|procedureevents|4-Procedures|None|Processes
225792|Invasive Ventilation|Invasive Ventilation|procedureevents|2-Ventilation|None|Processes
224263|Multi Lumen|Multi Lumen|procedureevents|Access Lines - Invasive|None|Processes
224277|18 Gauge|18 Gauge|procedureevents|Access Lines - Peripheral|None|Processes
""")  # noqa: E501
UNIT = {int(r[0]): r[5] or None for r in D_ITEMS}
# itemid|label|fluid|category|unit|ref low|ref high|median|log-sd|decimals|panel
LABS = _rows("""
50983|Sodium|Blood|Chemistry|mEq/L|133|145|139|0.025|0|chem
50971|Potassium|Blood|Chemistry|mEq/L|3.3|5.1|4.1|0.1|1|chem
50902|Chloride|Blood|Chemistry|mEq/L|96|108|102|0.035|0|chem
50882|Bicarbonate|Blood|Chemistry|mEq/L|22|32|25|0.12|0|chem
51006|Urea Nitrogen|Blood|Chemistry|mg/dL|6|20|18|0.5|0|chem
50912|Creatinine|Blood|Chemistry|mg/dL|0.5|1.2|1.0|0.45|1|chem
50931|Glucose|Blood|Chemistry|mg/dL|70|100|115|0.3|0|chem
51301|White Blood Cells|Blood|Hematology|K/uL|4.0|11.0|8.5|0.4|1|cbc
51222|Hemoglobin|Blood|Hematology|g/dL|13.7|17.5|11|0.18|1|cbc
51221|Hematocrit|Blood|Hematology|%|40|52|33|0.17|1|cbc
51265|Platelet Count|Blood|Hematology|K/uL|150|440|220|0.4|0|cbc
51237|INR(PT)|Blood|Hematology||0.9|1.1|1.2|0.25|1|coag
50885|Bilirubin, Total|Blood|Chemistry|mg/dL|0|1.5|0.7|0.7|1|lft
50820|pH|Blood|Blood Gas|units|7.35|7.45|7.39|0.008|2|bg
50821|pO2|Blood|Blood Gas|mm Hg|85|105|95|0.35|0|bg
50818|pCO2|Blood|Blood Gas|mm Hg|35|45|41|0.15|0|bg
50813|Lactate|Blood|Blood Gas|mmol/L|0.5|2|1.6|0.5|1|bg
""")
# Urinalysis results are text ("NEG", ">100") without valuenum, as in MIMIC-IV.
TEXT_LABS = _rows("""
51484|Ketone|mg/dL|NEG,NEG,TR,10
51466|Blood||NEG,NEG,TR,SM,LG
51492|Protein|mg/dL|NEG,TR,30,>100
51478|Glucose|mg/dL|NEG,NEG,NEG,>1000
""")
PANEL_P = {"chem": 1.0, "cbc": 0.8, "coag": 0.3, "lft": 0.2, "bg": 0.1, "ua": 0.08}
DX = _rows("""
4019|9|Unspecified essential hypertension
2724|9|Other and unspecified hyperlipidemia
42731|9|Atrial fibrillation
4280|9|Congestive heart failure, unspecified
5849|9|Acute kidney failure, unspecified
41401|9|Coronary atherosclerosis of native coronary artery
25000|9|Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled
5990|9|Urinary tract infection, site not specified
2859|9|Anemia, unspecified
53081|9|Esophageal reflux
2761|9|Hyposmolality and/or hyponatremia
311|9|Depressive disorder, not elsewhere classified
5853|9|Chronic kidney disease, Stage III (moderate)
3051|9|Tobacco use disorder
27800|9|Obesity, unspecified
I10|10|Essential (primary) hypertension
E785|10|Hyperlipidemia, unspecified
I4891|10|Unspecified atrial fibrillation
N179|10|Acute kidney failure, unspecified
I2510|10|Atherosclerotic heart disease of native coronary artery without angina pectoris
E119|10|Type 2 diabetes mellitus without complications
N390|10|Urinary tract infection, site not specified
D649|10|Anemia, unspecified
K219|10|Gastro-esophageal reflux disease without esophagitis
J449|10|Chronic obstructive pulmonary disease, unspecified
F329|10|Major depressive disorder, single episode, unspecified
E039|10|Hypothyroidism, unspecified
Z66|10|Do not resuscitate
G4733|10|Obstructive sleep apnea (adult) (pediatric)
Z87891|10|Personal history of nicotine dependence
""")  # noqa: E501
PX = _rows("""
3893|9|Venous catheterization, not elsewhere classified
9604|9|Insertion of endotracheal tube
9671|9|Continuous invasive mechanical ventilation for less than 96 consecutive hours
3891|9|Arterial catheterization
3961|9|Extracorporeal circulation auxiliary to open heart surgery
0BH17EZ|10|Insertion of Endotracheal Airway into Trachea, Via Natural or Artificial Opening
5A1945Z|10|Respiratory Ventilation, 24-96 Consecutive Hours
02HV33Z|10|Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach
B548ZZA|10|Ultrasonography of Superior Vena Cava, Guidance
5A1D70Z|10|Performance of Urinary Filtration, Intermittent, Less than 6 Hours Per Day
""")
HCPCS = _rows("""
G0378||Hospital observation service, per hour|Hospital observation per hr
99291|1||Critical care services
93454|1||Cardiovascular
36556|1||Cardiovascular system
43239|1||Digestive system
J1100||Injection, dexamethasone sodium phosphate, 1 mg|Dexamethasone sodium phos
""")
DRG = _rows("""
HCFA|871|SEPTICEMIA OR SEVERE SEPSIS W/O MV 96+ HOURS W MCC
HCFA|291|HEART FAILURE & SHOCK W MCC
HCFA|683|RENAL FAILURE W CC
HCFA|377|G.I. HEMORRHAGE W MCC
HCFA|864|FEVER
APR|720|SEPTICEMIA & DISSEMINATED INFECTIONS
APR|133|RESPIRATORY FAILURE
APR|194|HEART FAILURE
APR|460|RENAL FAILURE
APR|143|OTHER RESPIRATORY DIAGNOSES EXCEPT SIGNS, SYMPTOMS & MINOR DIAGNOSES
""")
# drug|formulary_drug_cd|gsn|ndc|prod_strength|dose_val_rx|dose_unit_rx|form_val_disp|
# form_unit_disp|doses_per_24_hrs|route|frequency|disp_sched
DRUGS = _rows("""
Furosemide|FURO40|008209|51079007320|40mg Tablet|40|mg|1|TAB|1|PO/NG|DAILY|8
Insulin|INSULIN|027413|0|Dummy Package for Sliding Scale|0|UNIT|0|VIAL||SC|ASDIR|
Acetaminophen|ACET325|004489|00904198261|325mg Tablet|325-650|mg|1-2|TAB|4|PO/NG|Q6H:PRN|
Heparin|HEPA5I|006549|63323026201|5000 Units / mL- 1mL Vial|5000|UNIT|1|mL|3|SC|Q8H|6, 14, 22
Metoprolol Tartrate|METO25|005132|51079025520|25mg Tablet|25|mg|1|TAB|2|PO|BID|8, 20
Sodium Chloride 0.9%  Flush|NACLFLUSH||0|10 mL Syringe|3-10|mL|0.3-1|SYR|3|IV|Q8H|6, 14, 22
Pantoprazole|PANT40|027462|00008084199|40mg Tablet|40|mg|1|TAB|1|PO|Q24H|8
Vancomycin|VANC1F|043952|00338355248|1g Frozen Bag|1000|mg|1|BAG|2|IV|Q12H|8, 20
Docusate Sodium|DOCU100|003009|00904224461|100mg Capsule|100|mg|1|CAP|2|PO|BID|8, 20
Senna|SENN187|019964|00904516561|8.6 mg Tablet|8.6-17.2|mg|1-2|TAB|1|PO|HS|22
Atorvastatin|ATOR40|029970|00378212177|40mg Tablet|40|mg|1|TAB|1|PO/NG|QHS|22
Potassium Chloride|KCL20PM|001322|00074780801|20mEq Packet|40|mEq|2|PKT|1|PO|ONCE|
""")
# itemid|amountuom|rateuom|rate low|rate high|bolus amount|ordercategoryname|secondary|
# ordercategorydescription|totalamount
INPUTS = _rows("""
220949|ml|mL/hour|5|100|0|02-Fluids (Crystalloids)|Additive (Crystalloid)|Continuous IV|250
225158|ml||0|0|500|03-IV Fluid Bolus||Bolus|500
225828|ml|mL/hour|75|150|0|02-Fluids (Crystalloids)||Continuous IV|1000
221906|mg|mcg/kg/min|0.02|0.3|0|01-Drips|02-Fluids (Crystalloids)|Continuous Med|250
222168|mg|mcg/kg/min|10|50|0|01-Drips|02-Fluids (Crystalloids)|Continuous Med|100
225798|dose||0|0|1|08-Antibiotics (IV)|02-Fluids (Crystalloids)|Drug Push|500
225166|mEq|mEq/hour|5|10|0|02-Fluids (Crystalloids)|Additive (Crystalloid)|Continuous IV|100
""")
# spec itemid|spec_type_desc|test itemid|test_name|P(organism)|comment when negative
MICRO = _rows("""
70012|BLOOD CULTURE|90201|Blood Culture, Routine|0.15|NO GROWTH.
70079|URINE|90039|URINE CULTURE|0.5|MIXED BACTERIAL FLORA ( >= 3 COLONY TYPES), CONSISTENT WITH SKIN AND/OR GENITAL CONTAMINATION.
70091|MRSA SCREEN|90189|MRSA SCREEN|0|No MRSA isolated.
70062|SPUTUM|90055|RESPIRATORY CULTURE|0.4|SPARSE GROWTH Commensal Respiratory Flora.
70064|STOOL|90221|C. difficile PCR|0|Negative for toxigenic C. difficile by the Illumigene DNA amplification assay.            (Reference Range-Negative).
""")  # noqa: E501
ORGS = [(80002, "ESCHERICHIA COLI"), (80004, "KLEBSIELLA PNEUMONIAE"),
        (80026, "PSEUDOMONAS AERUGINOSA"), (80023, "STAPH AUREUS COAG +"),
        (80053, "ENTEROCOCCUS SP.")]
ABX = [(90029, "MEROPENEM", 0.25), (90012, "GENTAMICIN", 1), (90019, "CIPROFLOXACIN", 0.25),
       (90026, "PIPERACILLIN/TAZO", 4), (90018, "CEFTRIAXONE", 1),
       (90008, "TRIMETHOPRIM/SULFA", 1), (90005, "CEFAZOLIN", 4)]
ICU_UNITS = ["Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
             "Medical/Surgical Intensive Care Unit (MICU/SICU)",
             "Cardiac Vascular Intensive Care Unit (CVICU)", "Coronary Care Unit (CCU)",
             "Trauma SICU (TSICU)", "Neuro Surgical Intensive Care Unit (Neuro SICU)",
             "Neuro Stepdown", "Neuro Intermediate"]
WARDS = ["Medicine", "Med/Surg", "Neurology", "Medicine/Cardiology", "Transplant",
         "Cardiac Surgery", "Hematology/Oncology", "Vascular", "Med/Surg/Trauma", "PACU",
         "Emergency Department Observation", "Discharge Lounge"]
SERVICES = ["MED", "CMED", "SURG", "OMED", "CSURG", "NSURG", "VSURG", "NMED", "TRAUM", "ORTHO"]
CHIEF = ["Shortness of breath", "Chest pain", "Abdominal pain", "Fever, chills",
         "Altered mental status", "Weakness", "Fall", "Hypotension", "Nausea/vomiting"]
EXAMS = [("CHEST (PORTABLE AP)", "Portable AP chest radiograph.",
          "Lungs are clear, without focal consolidation. No pleural effusion or pneumothorax.\n"
          "Heart size is normal. Mediastinal contours are unremarkable.",
          "No acute cardiopulmonary process."),
         ("CHEST (PA AND LAT)", "Chest PA and lateral.",
          "Mild pulmonary vascular congestion, with small bilateral pleural effusions.\n"
          "Bibasilar opacities likely reflect atelectasis, though infection is not excluded.",
          "Mild pulmonary edema, \"improved\" compared to prior."),
         ("CT HEAD W/O CONTRAST", "Contiguous axial images of the brain without contrast.",
          "There is no evidence of hemorrhage, edema, mass effect, or infarction.\n"
          "The ventricles and sulci are normal in size and configuration.",
          "No acute intracranial abnormality."),
         ("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "Grayscale and color Doppler ultrasound.",
          "The liver is normal in echotexture, without focal lesion. No biliary dilation.\n"
          "The gallbladder contains sludge, without wall thickening or pericholecystic fluid.",
          "Gallbladder sludge, without sonographic evidence of acute cholecystitis.")]


# exam_code and CPT code of each of EXAMS, as radiology_detail gives them
EXAM_CODES = [("CXRP", "71045"), ("CXR", "71046"), ("CTHEAD", "70450"), ("USABD", "76705")]
